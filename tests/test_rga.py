"""MPN* (Table 5, Sec. 5.4.1): RGA-S (Zhang et al., CVPR 2020, Sec. 3.2) after each backbone
stage, checked by hand on a tiny map, on two input sizes, through torchreid's factory, the
configs, and a few training steps."""
import argparse
import os.path as osp

import numpy as np
import pytest
import torch

import mpn_plugin  # noqa: F401  (registers the models)
from mpn_plugin import compat
from mpn_plugin.build import build_optimizer
from mpn_plugin.config import get_default_config, optimizer_kwargs
from mpn_plugin.losses import (
    class_wise_alignment_loss,
    cosine_batch_hard_triplet_loss,
    part_id_loss,
)
from mpn_plugin.models import MPN, MPNConfig, build_backbone, build_mpn
from mpn_plugin.models.rga import SpatialRGA, relation_vectors
from mpn_plugin.train import setup_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ----------------------------------------------------------------------------- RGA-S by hand
def test_relation_features_match_hand_computation_on_2x2_map():
    # C = 4 channels, 2x2 map (N = 4), channel ratio 2 -> theta, phi: 4 -> 2 channels
    rga = SpatialRGA(4, 2, 2, channel_ratio=2).eval()      # eval: BN = x / sqrt(1 + eps)
    Wt = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    Wp = np.array([[0.0, 1.0, 1.0, 0.0], [2.0, 0.0, 0.0, 1.0]])
    with torch.no_grad():
        rga.theta[0].weight.copy_(torch.tensor(Wt).float().view(2, 4, 1, 1))
        rga.phi[0].weight.copy_(torch.tensor(Wp).float().view(2, 4, 1, 1))
    X = np.arange(16, dtype=np.float64).reshape(4, 4) % 5 - 1.0     # (C, N), raster order
    bn = 1.0 / np.sqrt(1.0 + rga.theta[1].eps)
    theta, phi = np.maximum(Wt @ X * bn, 0), np.maximum(Wp @ X * bn, 0)   # (2, N)
    R = theta.T @ phi                                                      # r_ij
    assert not np.allclose(R, R.T)                     # outgoing and incoming differ here
    expected = np.stack([np.concatenate([R[i, :], R[:, i]]) for i in range(4)], 1)   # (2N, N)
    x = torch.tensor(X).float().view(1, 4, 2, 2)
    with torch.no_grad():
        got = rga.relation_features(x)
    assert got.shape == (1, 8, 2, 2)
    np.testing.assert_allclose(got.view(8, 4).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_relation_vectors_of_position_i_are_row_i_then_column_i():
    theta, phi = torch.randn(2, 3, 3, 2), torch.randn(2, 3, 3, 2)
    R = torch.einsum("bci,bcj->bij", theta.flatten(2), phi.flatten(2))
    r = relation_vectors(theta, phi).flatten(2)                # (B, 2N, N)
    for i in range(6):
        assert torch.allclose(r[:, :6, i], R[:, i, :], atol=1e-5)
        assert torch.allclose(r[:, 6:, i], R[:, :, i], atol=1e-5)


def test_output_is_feature_times_sigmoid_attention_map():
    rga = SpatialRGA(16, 4, 2).eval()
    x = torch.randn(2, 16, 4, 2)
    with torch.no_grad():
        a = rga.attention_map(x)
        out = rga(x)
    assert a.shape == (2, 1, 4, 2) and bool(((a > 0) & (a < 1)).all())
    assert torch.allclose(out, x * a)


def test_paper_ratios_are_the_defaults():
    rga = SpatialRGA(256, 32, 16)           # ResNet-50 layer1 at 128x64: N = 512
    assert rga.theta[0].out_channels == 256 // 8                  # C / 8
    assert rga.relation_embedding[0].in_channels == 2 * 512       # [r_i, r_.i]
    assert rga.relation_embedding[0].out_channels == 512 // 8     # N / 8
    assert rga.score[0][0].out_channels == (1 + 64) // 8          # W1: / 8
    assert rga.score[1][0].out_channels == 1                      # W2 -> one map


# ----------------------------------------------------------------------------- MPN* backbones
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2"])
@pytest.mark.parametrize("size", [(128, 64), (96, 48)])
def test_mpn_star_output_shapes_on_two_input_sizes(backbone, size):
    h, w = size
    m = build_mpn(5, variant="mpn_star", backbone=backbone, input_size=size, dim=32).eval()
    # one RGA-S after each of the four stages, at strides 4, 8, 16 and F (stride 16)
    assert list(m.backbone_attention.map_sizes().values()) == [
        (h // 4, w // 4), (h // 8, w // 8), (h // 16, w // 16), (h // 16, w // 16)]
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        assert m(x).shape == (2, 6 * 32)
        F = m(x, return_featuremaps=True)
    assert F.shape == (2, m.backbone.out_channels, *m.backbone.feature_size(h, w))


def test_changed_input_size_raises_naming_sizes_and_config_fields():
    m = build_mpn(5, variant="mpn_star", backbone="resnet18", input_size=(128, 64), dim=32)
    with pytest.raises(ValueError, match=r"built for 128x64 inputs, got 96x48") as e:
        m.eval()(torch.randn(1, 3, 96, 48))
    assert "data.height 96 data.width 48" in str(e.value)
    assert "input_size=(96, 48)" in str(e.value)
    with pytest.raises(ValueError, match="built for a 8x4 feature map"):       # module alone
        m.backbone_attention.stages["layer4"](torch.randn(1, 512, 6, 3))


def test_attention_is_a_top_level_child_of_the_model_and_osnet_is_refused():
    m = build_mpn(5, variant="mpn_star", backbone="resnet18", input_size=(64, 32), dim=32)
    assert "backbone_attention" in dict(m.named_children())
    keys = list(m.state_dict())
    assert any(k.startswith("backbone_attention.stages.layer1.") for k in keys)
    assert not any("attention" in k for k in keys if k.startswith("backbone."))
    assert build_mpn(5, backbone="resnet18", dim=32).backbone_attention is None      # MPN
    with pytest.raises(ValueError, match="four stages.*'osnet_x0_25'"):
        build_mpn(5, variant="mpn_star", backbone="osnet_x0_25", input_size=(64, 32))


def test_backbone_without_attention_is_the_plain_trunk():
    bb = build_backbone("resnet18").eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(bb(x), bb.body(x)) and torch.equal(bb(x, None), bb.body(x))


def test_staged_lr_gives_rga_s_the_heads_lr_and_the_trunk_base_lr_mult():
    m = build_mpn(5, variant="mpn_star", backbone="resnet18", input_size=(64, 32), dim=32)
    cfg = get_default_config()
    cfg.train.staged_lr, cfg.train.base_lr_mult = True, 0.1
    kwargs = optimizer_kwargs(cfg)
    assert kwargs["new_layers"] == cfg.train.new_layers
    assert "backbone_attention" in cfg.train.new_layers
    base, new = build_optimizer(m, cfg).param_groups
    assert base["lr"] == pytest.approx(0.1 * cfg.train.lr) and new["lr"] == cfg.train.lr
    base_ids, new_ids = {id(p) for p in base["params"]}, {id(p) for p in new["params"]}
    rga = {id(p) for p in m.backbone_attention.parameters()}
    trunk = {id(p) for p in m.backbone.parameters()}
    assert rga and rga <= new_ids and not rga & base_ids
    assert trunk == base_ids and not trunk & new_ids


def test_fixbase_open_layers_train_rga_s_with_the_heads():
    open_layers = get_default_config().train.open_layers
    m = build_mpn(5, variant="mpn_star", backbone="resnet18", input_size=(64, 32), dim=32)
    compat.utils.open_specified_layers(m, open_layers)
    assert all(p.requires_grad for p in m.backbone_attention.parameters())
    assert all(p.requires_grad for p in m.main_heads.parameters())
    assert not any(p.requires_grad for p in m.backbone.parameters())
    compat.utils.open_specified_layers(build_mpn(5, backbone="resnet18", dim=32), open_layers)


def test_torchreid_factory_builds_mpn_star():
    model = compat.models.build_model("mpn_star", num_classes=10, loss="triplet",
                                      pretrained=False, use_gpu=False)
    assert isinstance(model, MPN) and model.config.backbone == "resnet50"
    assert model.config.backbone_attention == "rga_s" and model.config.use_attention
    # built for the paper's 384x128 (Sec. 5.1): F is 24x8 (last stride 1)
    assert model.backbone_attention.map_sizes() == {
        "layer1": (96, 32), "layer2": (48, 16), "layer3": (24, 8), "layer4": (24, 8)}
    with pytest.raises(ValueError, match="built for 384x128 inputs, got 256x128"):
        model.eval()(torch.zeros(1, 3, 256, 128))
    mobile = compat.models.build_model("mpn_star_mobilenetv2", num_classes=10, loss="triplet",
                                       pretrained=False, use_gpu=False)
    assert mobile.config.backbone == "mobilenetv2" and mobile.backbone_attention is not None


def test_configs_pass_data_size_and_attention_to_the_model():
    args = argparse.Namespace(config_file=osp.join(ROOT, "configs", "ablation", "mpn_star.yaml"),
                              root="", sources=None, targets=None,
                              opts=["data.height", "96", "data.width", "48"])
    kwargs = vars(MPNConfig.from_cfg(setup_cfg(args)))
    assert kwargs["backbone_attention"] == "rga_s" and kwargs["input_size"] == (96, 48)
    args.config_file = osp.join(ROOT, "configs", "cuhk01", "mpn_star_mobilenetv2.yaml")
    args.opts = []
    kwargs = vars(MPNConfig.from_cfg(setup_cfg(args)))
    assert kwargs["backbone_attention"] == "rga_s" and kwargs["backbone"] == "mobilenetv2"
    assert kwargs["input_size"] == (128, 64)


def test_mpn_star_trains_loss_falls():
    torch.manual_seed(0)
    m = build_mpn(4, variant="mpn_star", backbone="resnet18", input_size=(64, 32), dim=32,
                  num_parts=2).train()
    x, pids = torch.randn(8, 3, 64, 32), torch.arange(4).repeat_interleave(2)
    mask, roi = torch.ones(8, 4, 2), torch.tensor([[0.0, 1.0]] * 8)      # F: 4x2
    # lr 0.02: a smooth descent (at lr 0.1 the early phase is chaotic and thread-order float
    # noise moved the result). Seeds 0-3, 1 or 2 threads: the last loss is 0.25-0.39 of the
    # first (the untrained model's, same seed and batch); the bound leaves a wide margin.
    opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9)
    losses = []
    for _ in range(14):            # ~4 s
        out = m(x, mask, roi)
        loss = (part_id_loss(out["mt_logits"], pids) + part_id_loss(out["at_logits"], pids)
                + cosine_batch_hard_triplet_loss(out["h"], pids)
                + class_wise_alignment_loss(out["h"], out["g"], pids))
        opt.zero_grad()
        loss.backward()
        if not losses:
            grad = m.backbone_attention.stages["layer1"].relation_embedding[0].weight.grad
            assert grad is not None and grad.abs().sum() > 0       # RGA-S is trained
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert losses[-1] < losses[len(losses) // 2], losses          # still falling, not a blip
