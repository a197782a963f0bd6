"""Export a trained model's test-time graph (backbone + MT heads; no AT, prior or classifier)
to ONNX with a dynamic batch axis, and check it against PyTorch with onnxruntime.

Examples::

    python tools/export_onnx.py --config-file configs/mpn_synthetic.yaml \
        --checkpoint log/mpn_synthetic/model/model.pth.tar-12 --out exported/mpn.onnx
    # then, anywhere with onnxruntime (no torch needed):
    #   import onnxruntime as ort
    #   sess = ort.InferenceSession('exported/mpn.onnx')
    #   feats = sess.run(None, {'images': batch})[0]    # (N, 3072), L2-normalised

The parity check compares L2-normalised features on random inputs and on ``--num-check``
images of the config's query split (or ``--images``), preprocessed with torchreid's test
transform; it fails (exit code 1) when the largest absolute difference exceeds
``--tolerance``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import sys

import numpy as np
import torch

from .. import compat
from ..build import load_trained_model
from ..export import export_onnx, onnx_features, onnx_parameter_names


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="YAML the model was trained with")
    p.add_argument("--checkpoint", required=True, help="checkpoint written by tools/train.py")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--root", default="", help="dataset root (for the parity images)")
    p.add_argument("--no-normalize", action="store_true",
                   help="export raw features (default: L2-normalised inside the graph)")
    p.add_argument("--flip", action="store_true", help="put the flip test in the graph")
    p.add_argument("--opset", type=int, default=None)
    p.add_argument("--dynamo", action="store_true", help="torch.export-based exporter")
    p.add_argument("--images", nargs="*", default=None,
                   help="image files/folders for the parity check (default: the query split)")
    p.add_argument("--num-check", type=int, default=32, help="real images in the parity check")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: key value ...")
    return p


def parity_images(args, cfg):
    """(N, 3, H, W) float32 images preprocessed with torchreid's test transform."""
    if args.images:
        paths = []
        for p in args.images:
            paths += sorted(glob.glob(osp.join(p, "*.*"))) if osp.isdir(p) else [p]
    else:
        import mpn_plugin.data  # noqa: F401  (registers the datasets)
        try:
            ds = compat.datasets.init_image_dataset(
                cfg.data.targets[0], root=cfg.data.root, mode="query", verbose=False)
        except (FileNotFoundError, RuntimeError, KeyError) as e:
            print(f"[export] no parity images ({e}); checking random inputs only")
            return np.zeros((0, 3, cfg.data.height, cfg.data.width), np.float32)
        paths = [item[0] for item in ds.data]
    paths = paths[:args.num_check]
    _, test_tf = compat.transforms.build_transforms(
        cfg.data.height, cfg.data.width, transforms=None, norm_mean=cfg.data.norm_mean,
        norm_std=cfg.data.norm_std)
    if not paths:
        return np.zeros((0, 3, cfg.data.height, cfg.data.width), np.float32)
    return torch.stack([test_tf(compat.read_image(p)) for p in paths]).numpy()


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    model, cfg = load_trained_model(args.config_file, args.checkpoint, args.root, args.opts)
    normalize = not args.no_normalize
    net = export_onnx(model, args.out, cfg.data.height, cfg.data.width, normalize=normalize,
                      flip=args.flip, opset=args.opset, dynamo=args.dynamo)
    rng = np.random.default_rng(0)
    inputs = {"random": rng.standard_normal((8, 3, cfg.data.height, cfg.data.width)
                                            ).astype(np.float32),
              "images": parity_images(args, cfg)}
    report = {"onnx": args.out, "normalized": normalize, "flip": args.flip,
              "parameters": sum(onnx_parameter_names(args.out).values()), "max_abs_diff": {}}
    for name, x in inputs.items():
        if not len(x):
            continue
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        out = onnx_features(args.out, x)
        if not normalize:  # compare what is used for retrieval: normalised features
            ref, out = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (ref, out))
        report["max_abs_diff"][name] = float(np.abs(ref - out).max())
        report["feature_dim"] = int(out.shape[1])
    report["ok"] = all(d < args.tolerance for d in report["max_abs_diff"].values())
    print(json.dumps(report, indent=2))
    if not report["ok"]:
        print(f"[export] parity check FAILED: max abs difference above {args.tolerance}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
