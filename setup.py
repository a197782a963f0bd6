"""mpn-reid: MPN (Ding et al., TPAMI 2020) as a torchreid plugin."""
from setuptools import find_packages, setup

# torch/torchvision are declared without an upper pin so that an already installed
# build (e.g. torch 2.14.1 from local disk) satisfies them and nothing pulls another torch.
INSTALL_REQUIRES = [
    "torch>=2.1",
    "torchvision>=0.16",
    "torchreid>=0.2.5",  # PyPI repackaging of deep-person-reid 1.4.0 (torchreid.reid.*)
    # torchreid 0.2.5 imports these but declares none of them:
    "numpy",
    "scipy",
    "opencv-python-headless",
    "gdown",
    "tensorboard",
    "yacs",
    "Cython",
    "tqdm",
    "Pillow",
    "matplotlib",
    "faiss-cpu",  # gallery search (mpn_plugin.inference.gallery_index)
]

EXTRAS = {
    "test": ["pytest>=7", "onnx", "onnxruntime", "onnxscript"],
    "gradcam": ["grad-cam>=1.5"],
    "onnx": ["onnx", "onnxruntime"],
}
EXTRAS["all"] = sorted({p for v in EXTRAS.values() for p in v})

setup(
    name="mpn-reid",
    version="0.1.0",
    description="Multi-task Part-aware Network (MPN) for person re-identification, as a torchreid plugin",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mpn_plugin", "mpn_plugin.*"]),
    python_requires=">=3.9",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    license="MIT",
)
