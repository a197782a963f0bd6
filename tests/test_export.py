"""Test-time model and ONNX export (issue: ONNX export): the exported graph equals the PyTorch
test-time forward within 1e-4 (normalised features) for any batch size, and holds no AT,
prior or classifier parameter."""
import numpy as np

# onnx and onnxruntime are declared (the test extra): a missing one fails here, never skips
import onnx  # noqa: E402,F401
import onnxruntime  # noqa: E402,F401
import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.export import InferenceModel, export_onnx, onnx_features, onnx_parameter_names
from mpn_plugin.models import build_mpn
from mpn_plugin.models.mpn import count_parameters
from trained_like import trained_like


@pytest.mark.parametrize("variant", ["mpn", "mpn_baseline", "mpn_naive_mtl"])
def test_inference_model_equals_eval_forward_and_flip_protocol(variant):
    model = trained_like(build_mpn(num_classes=7, variant=variant, backbone="resnet18", dim=64))
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(InferenceModel(model, normalize=False)(x), ref, atol=1e-6)
        flipped = ref + model(torch.flip(x, dims=[3]))                 # engine's flip test
        out = InferenceModel(model, normalize=True, flip=True)(x)
    assert torch.allclose(out, torch.nn.functional.normalize(flipped, dim=1), atol=1e-6)


def test_onnx_parity_dynamic_batch_and_no_training_parameters(tmp_path):
    # Naive MTL: the AT heads are separate parameters, so their absence is visible
    model = trained_like(build_mpn(num_classes=50, variant="mpn_naive_mtl", backbone="resnet18"))
    path = str(tmp_path / "mpn.onnx")
    net = export_onnx(model, path, height=64, width=32)
    for n in (1, 5):                                                   # dynamic batch axis
        x = torch.randn(n, 3, 64, 32)
        with torch.no_grad():
            ref = net(x).numpy()
        out = onnx_features(path, x.numpy(), batch_size=4)
        assert out.shape == (n, 6 * 512)
        assert np.abs(out - ref).max() < 1e-4
        assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    params = onnx_parameter_names(path)
    assert not [k for k in params if "auxiliary" in k or "classifier" in k]
    test_time = count_parameters(model.test_time_modules())
    buffers = sum(b.numel() for m in model.test_time_modules() for n, b in m.named_buffers()
                  if not n.endswith("num_batches_tracked"))
    at_heads = count_parameters([model.auxiliary_heads])
    classifiers = sum(p.numel() for p in model.classifier_parameters())
    total = sum(params.values())
    assert total <= test_time + buffers                       # BN may be folded into the convs
    assert total > test_time - buffers                        # ... but the heads are all there
    assert min(at_heads, classifiers) > 2 * buffers           # so any AT/classifier would show


def test_onnx_export_of_torchreid_pcb_p6(tmp_path):
    model = compat.models.build_model("pcb_p6", num_classes=20, loss="softmax", pretrained=False)
    model = trained_like(model)
    path = str(tmp_path / "pcb.onnx")
    net = export_onnx(model, path, height=192, width=64)   # F: 12 rows, 6 strips
    x = torch.randn(2, 3, 192, 64)
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(onnx_features(path, x.numpy()) - ref).max() < 1e-4
    assert not [k for k in onnx_parameter_names(path) if "classifier" in k]


def test_export_tool_end_to_end(tiny_root, tmp_path):
    """Train one epoch, export, parity-check on random inputs and real query images."""
    from mpn_plugin.cli import export_onnx as tool
    from mpn_plugin.train import main

    fast = ["data.height", "64", "data.width", "32", "data.workers", "0", "train.batch_size", "16",
            "sampler.num_instances", "4", "mpn.dim", "64"]
    main(["--config-file", "configs/mpn_synthetic.yaml", "--root", tiny_root, *fast,
          "train.max_epoch", "1", "test.evaluate", "False", "data.save_dir", str(tmp_path / "m")])
    ckpt = str(tmp_path / "m" / "model" / "model.pth.tar-1")
    out = str(tmp_path / "mpn.onnx")
    report = tool.main(["--config-file", "configs/mpn_synthetic.yaml", "--checkpoint", ckpt,
                        "--out", out, "--root", tiny_root, "--num-check", "6", "--flip", *fast])
    assert report["ok"] and report["feature_dim"] == 6 * 64
    assert set(report["max_abs_diff"]) == {"random", "images"}
    assert max(report["max_abs_diff"].values()) < 1e-4
    with pytest.raises(FileNotFoundError, match="checkpoint file"):
        tool.main(["--config-file", "configs/mpn_synthetic.yaml", "--checkpoint",
                   str(tmp_path / "missing.pth"), "--out", out])
