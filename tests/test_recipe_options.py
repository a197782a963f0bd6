"""Issue 29's options beyond the paper, each against a hand computation: the ID loss averaged
over parts (a), MT pooling avg / GeM (b), MobileNetV2's F without its ReLU6 clip (e), the
saturation measure at the heads' maxima (e), and the config nodes that set them."""
import math

import pytest
import torch
import torch.nn as nn

from mpn_plugin.config import get_default_config
from mpn_plugin.engine import MPNEngine, MPNLossConfig
from mpn_plugin.evaluation.part_selectivity import feature_saturation
from mpn_plugin.losses import part_id_loss
from mpn_plugin.models import MPNConfig, build_backbone, build_mpn
from mpn_plugin.models.part_head import GEM_P, pool_positions


# ----------------------------------------------------------------------------- (a) ID loss
def test_id_loss_mean_over_parts_is_the_sum_over_k():
    logits = torch.randn(3, 5, 7)
    targets = torch.tensor([0, 1, 2, 3, 4])
    per_part = [nn.functional.cross_entropy(logits[k], targets).item() for k in range(3)]
    assert part_id_loss(logits, targets).item() == pytest.approx(sum(per_part), rel=1e-6)
    assert part_id_loss(logits, targets, reduction="mean").item() == pytest.approx(
        sum(per_part) / 3, rel=1e-6)
    # K = 1: the control of issue 29 (a), sum and mean coincide
    assert part_id_loss(logits[:1], targets, reduction="mean").item() == pytest.approx(
        part_id_loss(logits[:1], targets).item())
    with pytest.raises(ValueError, match="id_reduction.*sum"):
        part_id_loss(logits, targets, reduction="max")


def test_engine_applies_id_reduction_to_both_tasks():
    K, B, C = 4, 6, 5
    out = {"mt_logits": torch.randn(K, B, C), "at_logits": torch.randn(K, B, C), "h": None,
           "g": None}
    pids = torch.arange(B) % C
    engine = MPNEngine.__new__(MPNEngine)
    engine.epoch = 0
    for reduction, scale in (("sum", 1.0), ("mean", 1.0 / K)):
        engine.loss_cfg = MPNLossConfig(id_reduction=reduction, triplet_weight=0,
                                        alignment="none")
        terms = engine.compute_losses(out, pids)
        for task in ("mt", "at"):
            expected = scale * part_id_loss(out[f"{task}_logits"], pids).item()
            assert terms[f"loss_id_{task}"].item() == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------- (b) pooling
def test_pool_positions_by_hand():
    y = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    assert pool_positions(y, "max").item() == 3.0
    assert pool_positions(y, "avg").item() == 1.5
    gem = ((1 + 2 ** GEM_P + 3 ** GEM_P + 1e-6 ** GEM_P) / 4) ** (1 / GEM_P)
    assert pool_positions(y, "gem").item() == pytest.approx(gem, rel=1e-5)
    with pytest.raises(ValueError):
        pool_positions(y, "median")


@pytest.mark.parametrize("pooling", ["avg", "gem"])
@pytest.mark.parametrize("training", [True, False])
def test_mt_pooling_pools_the_first_layer_map_over_positions(pooling, training):
    model = build_mpn(5, backbone="resnet18", num_parts=3, dim=16, mt_pooling=pooling)
    model.train(training)
    heads = model.main_heads
    F = torch.randn(4, 512, 8, 4).relu()
    with torch.no_grad():
        got = heads.forward_whole(F)
        y = torch.relu(heads.first.bn(heads.first.conv.shared_input(F.reshape(4, 512, -1))))
        expected = heads._vector_stage(pool_positions(y, pooling))
    torch.testing.assert_close(got, expected)
    # and it is not the paper's GMP
    max_model = build_mpn(5, backbone="resnet18", num_parts=3, dim=16)
    max_model.load_state_dict(model.state_dict())
    max_model.train(training)
    with torch.no_grad():
        assert not torch.allclose(max_model.main_heads.forward_whole(F), got)


def test_mt_pooling_leaves_the_auxiliary_heads_on_gmp():
    model = build_mpn(5, backbone="resnet18", num_parts=3, dim=16, mt_pooling="avg")
    assert model.main_heads.pooling == "avg" and model.auxiliary_heads.pooling == "max"
    assert MPNConfig().mt_pooling == "max"                        # the paper is the default
    with pytest.raises(ValueError, match="mt_pooling"):
        MPNConfig(mt_pooling="sum")


# ----------------------------------------------------------------------------- (e) ReLU6
def test_feature_clip_false_lets_f_exceed_six():
    clipped = build_backbone("mobilenetv2").eval()
    free = build_backbone("mobilenetv2", feature_clip=False).eval()
    with torch.no_grad():                   # a last BN giving F = (bias_c) in channel c
        clipped.body[-1][1].weight.zero_()
        clipped.body[-1][1].bias.copy_(torch.linspace(-2.0, 10.0, 1280))
    free.load_state_dict(clipped.state_dict())                  # same weights: no new tensor
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a, b = clipped(x), free(x)
    assert a.max().item() == 6.0 and b.max().item() == pytest.approx(10.0)
    torch.testing.assert_close(a, b.clamp(max=6.0))
    assert b.min().item() == 0.0                                 # still a ReLU
    with pytest.raises(ValueError, match="no clip"):
        build_backbone("resnet18", feature_clip=False)
    with pytest.raises(ValueError, match="feature_clip"):
        MPNConfig(backbone="resnet18", feature_clip=False)


class _FixedBackbone(nn.Module):
    """Returns a fixed F whatever the input (for the saturation measure)."""

    def __init__(self, feature_map):
        super().__init__()
        self.feature_map = feature_map

    def forward(self, x, attention=None):
        return self.feature_map[: x.shape[0]]


@pytest.mark.parametrize("clipped_channels,expected", [(512, 1.0), (128, 0.25), (0, 0.0)])
def test_feature_saturation_counts_clipped_entries_at_the_picked_position(clipped_channels,
                                                                         expected):
    C, H, W = 512, 6, 2                                         # resnet18's F has 512 channels
    F = torch.rand(2, C, H, W) * 4.0                           # every entry below the clip
    F[:, :, 1, 1] = 5.9                                         # position 3 holds every max...
    F[:, :clipped_channels, 1, 1] = 6.0                         # ...clipped in some channels
    model = build_mpn(5, backbone="resnet18", num_parts=3, dim=4, use_attention=False)
    model.backbone = _FixedBackbone(F)
    with torch.no_grad():                                       # heads that keep the order
        for conv in (model.main_heads.first.conv, model.auxiliary_heads.first.conv):
            conv.weight.abs_()
    sat = feature_saturation(model, [torch.zeros(2, 3, 96, 32)])
    assert sat["overall"] == pytest.approx(clipped_channels / (C * H * W))
    assert sat["mt"] == pytest.approx(expected)
    assert sat["maxima_mt"] == 2 * 3 * 4                        # images x heads x channels
    # the ATs see uniform strips: the strip holding row 1 picks it, the others pick elsewhere
    assert 0.0 <= sat["at"] <= expected + 1e-9
    if clipped_channels:
        assert sat["at"] > 0


# ----------------------------------------------------------------------------- config nodes
def test_config_nodes_reach_the_model_and_the_loss():
    cfg = get_default_config()
    cfg.merge_from_list(["mpn.backbone", "mobilenetv2", "mpn.mt_pooling", "gem",
                         "mpn.feature_clip", "False", "mpn.loss.id_reduction", "mean",
                         "test.readout", "concat"])
    kwargs = vars(MPNConfig.from_cfg(cfg))
    assert (kwargs["mt_pooling"], kwargs["feature_clip"], kwargs["readout"]) == (
        "gem", False, "concat")
    assert MPNLossConfig.from_cfg(cfg).id_reduction == "mean"
    defaults = get_default_config()
    assert (defaults.mpn.mt_pooling, defaults.mpn.feature_clip, defaults.test.readout,
            defaults.mpn.loss.id_reduction) == ("max", True, "mt", "sum")
    model = build_mpn(3, num_parts=2, dim=8, **{k: v for k, v in kwargs.items()
                                                if k in ("backbone", "mt_pooling",
                                                         "feature_clip", "readout")})
    assert model.main_heads.pooling == "gem" and model.feature_dim == 2 * 2 * 8
    assert isinstance(model.backbone.body[-1][2], nn.ReLU)
    with torch.no_grad():
        assert not math.isnan(float(model.eval()(torch.zeros(1, 3, 64, 32)).sum()))


# ----------------------------------------------------------------------------- data rules
def test_num_instances_derived_from_the_images_per_identity():
    from mpn_plugin.data.sampler_check import derived_num_instances

    def train(per_id, ids=5):
        return [(f"{p}_{i}", p, 0) for p in range(ids) for i in range(per_id)]
    assert derived_num_instances(train(4), 48) == 2           # CUHK01: 4 images per identity
    assert derived_num_instances(train(10), 48) == 4          # 5 -> the divisor of 48 below
    assert derived_num_instances(train(20), 48) == 8
    assert derived_num_instances(train(20), 60) == 10
    assert derived_num_instances(train(2), 48) == 2           # never below a positive pair
    with pytest.raises(ValueError, match="training images"):
        derived_num_instances([], 48)


def test_resolve_num_instances_replaces_only_zero(monkeypatch):
    from mpn_plugin import build as build_mod
    from mpn_plugin import compat

    class FakeManager:
        def __init__(self, **kwargs):
            assert kwargs["train_sampler"] == "RandomSampler"
            items = [(f"{p}_{i}", p, 0) for p in range(6) for i in range(12)]
            self.train_loader = type("L", (), {"dataset": type("D", (), {"train": items})})

    monkeypatch.setattr(compat.data, "ImageDataManager", FakeManager)
    cfg = get_default_config()
    cfg.sampler.num_instances = 0
    cfg.freeze()
    resolved = build_mod.resolve_num_instances(cfg)
    assert resolved.sampler.num_instances == 6 and cfg.sampler.num_instances == 0
    assert resolved.is_frozen()
    fixed = get_default_config()
    assert build_mod.resolve_num_instances(fixed) is fixed       # 8 stays 8
    with pytest.raises(ValueError, match="resolve_num_instances"):
        build_mod.build_datamanager(cfg, use_gpu=False)
    # a recipe that inherits 0 but samples at random (the softmax model) needs no identities:
    # it is left as it is, and builds (the random sampler never reads num_instances)
    random = cfg.clone()
    random.defrost()
    random.sampler.train_sampler = "RandomSampler"
    random.freeze()
    assert build_mod.resolve_num_instances(random) is random
    assert isinstance(build_mod.build_datamanager(random, use_gpu=False), FakeManager)
