"""One home per fact (issue 31): the model name -> MPNConfig resolution (the config and the
factory agree), ``MPNConfig.from_cfg`` (``cfg.mpn`` with its ``sharing`` node), the feature
stride (``Backbone.stride``, ``models.feature_stride``) and the one test-time forward
(``models.inference_features``: MPN's eval forward, the ONNX wrapper and the engine's flip
test)."""
import dataclasses
import types

import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.config import get_default_config, minimum_input_size
from mpn_plugin.engine.mixins import EngineMixin
from mpn_plugin.export import InferenceModel
from mpn_plugin.models import (
    MODEL_NAMES,
    TORCHREID_STRIDE,
    MPNConfig,
    SharingConfig,
    build_backbone,
    build_mpn,
    feature_stride,
    inference_features,
    is_mpn_model,
    model_name_fields,
)
from trained_like import trained_like


def _cfg(name, *opts):
    cfg = get_default_config()
    cfg.merge_from_list(["model.name", name, *opts])
    return cfg


# ----------------------------------------------------------------------- name -> MPNConfig
#: the non-default config of the hand-written expectations below
OPTS = ["mpn.backbone", "resnet18", "mpn.num_parts", "4", "mpn.dim", "64",
        "mpn.use_attention", "False", "mpn.sharing.conv2", "False",
        "mpn.sharing.batchnorm", "module", "mpn.classifier_neck", "bn",
        "mpn.mt_pooling", "gem", "data.height", "128", "data.width", "64",
        "test.readout", "concat"]
#: MPNConfig of OPTS with model.name mpn, every field written out
FROM_OPTS = dict(
    backbone="resnet18", last_stride=1, num_parts=4, dim=64, use_attention=False,
    attention_reduction=4, tasks="mt_at",
    sharing=SharingConfig(conv1=True, conv2=False, attention=True, batchnorm="module"),
    prior_variant="full", backbone_weights="", classifier_neck="bn", classifier_init_std=1e-3,
    pretrained=False, backbone_attention="none", input_size=(128, 64), mt_pooling="gem",
    feature_clip=True, readout="concat")
#: what each name changes in FROM_OPTS (the name's fields win over cfg.mpn)
EXPECTED = {
    "mpn": {},                                             # nothing beyond MPNConfig's defaults
    "mpn_o": dict(use_attention=False),
    "mpn_star": dict(use_attention=True, backbone_attention="rga_s"),
    "mpn_naive_mtl": dict(use_attention=False, sharing=SharingConfig(
        conv1=False, conv2=False, attention=False, batchnorm="affine")),
    "mpn_o_mobilenetv2": dict(use_attention=False, backbone="mobilenetv2"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_from_cfg_gives_the_hand_written_fields(name):
    got = MPNConfig.from_cfg(_cfg(name, *OPTS))
    assert dataclasses.asdict(got) == dataclasses.asdict(MPNConfig(**{**FROM_OPTS,
                                                                       **EXPECTED[name]}))


def test_from_cfg_of_the_baseline_and_pretrained():
    cfg = _cfg("mpn_baseline_mobilenetv2", "model.pretrained", "True", "mpn.num_parts", "3")
    got = MPNConfig.from_cfg(cfg)
    assert got == MPNConfig(backbone="mobilenetv2", num_parts=3, tasks="at_only",
                            prior_variant="uniform", use_attention=False, pretrained=True,
                            input_size=(256, 128))


@pytest.mark.parametrize("name", sorted(MODEL_NAMES))
def test_config_and_factory_resolve_every_name_alike(name):
    """model.name through the config and variant= through build_mpn (torchreid's factory)
    give the same MPNConfig; only the input size differs by default (the factory's is the
    paper's 384x128), so it is passed."""
    cfg = _cfg(name)
    model = build_mpn(3, variant=name, input_size=(cfg.data.height, cfg.data.width))
    assert model.config == MPNConfig.from_cfg(cfg)
    assert is_mpn_model(name) and model_name_fields(name) == {
        k: getattr(model.config, k) for k in model_name_fields(name)}


def test_unknown_names():
    assert not is_mpn_model("pcb_p6")
    with pytest.raises(ValueError, match="unknown MPN variant 'pcb_p6'.*mpn_o"):
        model_name_fields("pcb_p6")


def test_old_sharing_keys_are_gone():
    cfg = get_default_config()
    assert set(cfg.mpn.sharing) == {f.name for f in dataclasses.fields(SharingConfig)}
    assert SharingConfig(**cfg.mpn.sharing) == SharingConfig()
    for key in ("share_conv1", "share_conv2", "share_attention", "bn_sharing"):
        assert key not in cfg.mpn
    assert "name" not in cfg.loss                          # read by nothing: removed


# ----------------------------------------------------------------------------- stride
@pytest.mark.parametrize("name,last_stride,stride", [
    ("resnet18", 1, 16), ("resnet18", 2, 32), ("mobilenetv2", 1, 16), ("mobilenetv2", 2, 32),
    ("osnet_x0_25", 1, 16)])
def test_backbone_stride(name, last_stride, stride):
    backbone = build_backbone(name, last_stride)
    assert backbone.stride == stride
    assert backbone.feature_size(384, 128) == (384 // stride, 128 // stride)


def test_feature_stride_of_a_config_is_the_backbone_stride():
    assert feature_stride(_cfg("mpn")) == 16
    assert feature_stride(_cfg("mpn_o", "mpn.last_stride", "2")) == 32
    # the name's backbone, not mpn.backbone
    cfg = _cfg("mpn_mobilenetv2", "mpn.backbone", "osnet_x0_25", "mpn.last_stride", "2")
    assert feature_stride(cfg) == 32 == minimum_input_size(cfg)
    assert feature_stride(_cfg("pcb_p6")) == TORCHREID_STRIDE == 16
    assert minimum_input_size(_cfg("resnet50")) == TORCHREID_STRIDE


# ------------------------------------------------------------------- test-time forward


def _models():
    torch.manual_seed(0)
    return {"mpn": trained_like(build_mpn(5, backbone="resnet18", num_parts=2, dim=16)),
            "resnet18": trained_like(compat.models.build_model(
                "resnet18", num_classes=5, loss="softmax", pretrained=False, use_gpu=False))}


@pytest.mark.parametrize("amp", [False, True])
def test_flip_test_is_bit_identical_to_the_old_expression(amp):
    """The engine's flip test before inference_features, for MPN and a torchreid model:
    ``model(x).float() + model(torch.flip(x, dims=[3])).float()`` under test.amp."""
    x = torch.randn(3, 3, 64, 32)
    for name, model in _models().items():
        engine = types.SimpleNamespace(unwrapped_model=model, amp_test=amp, flip_test=True,
                                       use_gpu=False)
        engine.autocast = types.MethodType(EngineMixin.autocast, engine)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            old = model(x).float() + model(torch.flip(x, dims=[3])).float()
            assert torch.equal(inference_features(model, x, flip=True).float(), old), name
            assert torch.equal(inference_features(model, x), model(x)), name
        with torch.no_grad():
            assert torch.equal(EngineMixin.extract_features(engine, x), old), name
            engine.flip_test = False
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                no_flip = model(x).float()
            assert torch.equal(EngineMixin.extract_features(engine, x), no_flip), name


def test_inference_model_flip_is_bit_identical_to_the_old_expression():
    x = torch.randn(2, 3, 64, 32)
    for name, model in _models().items():
        net = InferenceModel(model, normalize=False, flip=True).eval()
        with torch.no_grad():
            old = net.features(x) + net.features(torch.flip(x, dims=[3]))
            assert torch.equal(net(x), old), name
            assert torch.equal(net.features(x), model(x)), name
