"""MPN architecture (Sec. 3.3, Fig. 3, Fig. 5b, Table 1 switches) checked by hand."""
import pytest
import torch
import torch.nn.functional as Fn
from torch.utils._python_dispatch import TorchDispatchMode

import mpn_plugin  # noqa: F401  (registers the models)
from mpn_plugin import compat
from mpn_plugin.models import MPN, MPNConfig, SharingConfig, build_mpn, count_parameters
from mpn_plugin.models.part_maps import part_feature_maps, strip_height

SMALL = dict(backbone="resnet18", dim=32)


def small(num_classes=5, **kw):
    cfg = dict(SMALL)
    cfg.update(kw)
    return MPN(num_classes, MPNConfig(**cfg))


def prior(B, H, W, top=0.0, bottom=1.0):
    return torch.ones(B, H, W), torch.tensor([[top, bottom]] * B)


# ----------------------------------------------------------------------------- P_k (Fig. 5b)
def test_part_maps_uniform_division_is_plain_row_split():
    F = torch.arange(12.0).view(1, 1, 12, 1)
    P = part_feature_maps(F, 3)  # no prior = fallback = uniform division
    assert P.shape == (1, 3, 1, 4, 1)
    assert P[0, :, 0, :, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]


def test_part_maps_mask_multiplies_every_channel_before_resize():
    # F: 2 channels, 4 rows x 2 cols; channel 0 = 1 everywhere, channel 1 = 2 everywhere
    F = torch.stack([torch.ones(4, 2), 2 * torch.ones(4, 2)]).unsqueeze(0)
    M = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]])
    P = part_feature_maps(F, 2, M, torch.tensor([[0.0, 1.0]]), "full")
    # ROI = whole map, K = 2: strip 0 = rows 0-1, strip 1 = rows 2-3, each times M
    assert P[0, 0, 0].tolist() == [[1, 0], [1, 1]]
    assert P[0, 1, 1].tolist() == [[0, 2], [2, 2]]
    # roi_resize skips the multiply (Table 2)
    P2 = part_feature_maps(F, 2, M, torch.tensor([[0.0, 1.0]]), "roi_resize")
    assert torch.equal(P2[0, 0, 0], torch.ones(2, 2))


def test_part_maps_one_row_roi_repeats_that_row():
    # rows hold their index; ROI = row 2 only (top 2/4, bottom 3/4): every output row is row 2
    F = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 1, 4, 3).contiguous()
    P = part_feature_maps(F, 2, None, torch.tensor([[0.5, 0.75]]), "roi_resize")
    assert P.shape == (1, 2, 1, 2, 3)
    assert torch.equal(P, torch.full_like(P, 2.0))


def test_part_maps_roi_resize_hand_values():
    # H = 4 rows valued 0,10,20,30; ROI rows [1, 3) = (10, 20) resized to 4 rows, K = 2:
    # align_corners=False bilinear: y = 1 + (i + 0.5) * 2/4 - 0.5 -> 0.75, 1.25, 1.75, 2.25
    # clamped to [1, 2] -> 1, 1.25, 1.75, 2 -> values 10, 12.5, 17.5, 20
    F = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 4, 1)
    P = part_feature_maps(F, 2, None, torch.tensor([[0.25, 0.75]]), "roi_resize")
    assert P[0, :, 0, :, 0].tolist() == [[10.0, 12.5], [17.5, 20.0]]


def test_part_maps_h_not_divisible_by_k_h16_k6():
    assert strip_height(16, 6) == 3
    torch.manual_seed(0)
    F = torch.randn(2, 3, 16, 8)
    P = part_feature_maps(F, 6)
    assert P.shape == (2, 6, 3, 3, 8)
    # the whole map resized to K * ceil(H/K) = 18 rows, split evenly
    ref = Fn.interpolate(F, size=(18, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(P.permute(0, 2, 1, 3, 4).reshape(2, 3, 18, 8), ref, atol=1e-5)


def test_part_maps_match_per_image_crop_and_interpolate_loop():
    torch.manual_seed(1)
    B, C, H, W, K = 4, 5, 24, 8, 6
    F = torch.randn(B, C, H, W)
    M = (torch.rand(B, H, W) > 0.3).float()
    rows = [(0, 24), (3, 21), (10, 11), (6, 24)]
    roi = torch.tensor([[a / H, b / H] for a, b in rows])
    P = part_feature_maps(F, K, M, roi, "full")
    for b, (r0, r1) in enumerate(rows):  # naive reference: one image at a time
        crop = (F[b] * M[b])[:, r0:r1].unsqueeze(0)
        ref = Fn.interpolate(crop, size=(H, W), mode="bilinear", align_corners=False)[0]
        got = P[b].permute(1, 0, 2, 3).reshape(C, H, W)
        assert torch.allclose(got, ref, atol=1e-5), b


def test_fallback_prior_equals_uniform_division():
    torch.manual_seed(2)
    F = torch.randn(2, 4, 24, 8)
    M, roi = prior(2, 24, 8)
    assert torch.allclose(part_feature_maps(F, 6, M, roi, "full"), part_feature_maps(F, 6))


# ----------------------------------------------------------------------------- sharing (PSA)
def param_ids(module):
    return {id(p) for p in module.parameters()} if module is not None else set()


@pytest.mark.parametrize("bn_mode", ["affine", "module"])
def test_mpn_mt_and_at_share_first_conv_ca_second_conv_and_bn(bn_mode):
    m = small(use_attention=True, sharing=SharingConfig(batchnorm=bn_mode))
    mt, at = m.main_heads, m.auxiliary_heads
    assert mt.first.conv.weight is at.first.conv.weight
    assert mt.second.conv.weight is at.second.conv.weight
    assert mt.first.bn.weight is at.first.bn.weight and mt.first.bn.bias is at.first.bn.bias
    if bn_mode == "module":      # the release: one CA and one BN module for both tasks
        assert mt.attention is at.attention and mt.first.bn is at.first.bn
    else:                        # the default: own running statistics per task
        assert mt.first.bn is not at.first.bn
    # only the classifiers are unshared
    assert param_ids(mt) == param_ids(at)
    assert not (param_ids(m.main_classifier) & param_ids(m.auxiliary_classifier))


def test_default_bn_sharing_is_affine():
    from mpn_plugin.config import get_default_config
    assert SharingConfig().batchnorm == "affine" == get_default_config().mpn.sharing.batchnorm


def test_task_specific_bn_keeps_conv_shared():
    m = small(sharing=SharingConfig(batchnorm=False))
    mt, at = m.main_heads, m.auxiliary_heads
    assert mt.first.conv is at.first.conv and mt.first.bn is not at.first.bn
    assert mt.first.bn.weight is not at.first.bn.weight


def _head_bns(heads):
    return [m for m in heads.modules() if isinstance(m, torch.nn.BatchNorm1d)]


def test_affine_bn_sharing_shares_gamma_beta_not_running_statistics():
    m = small(use_attention=True, sharing=SharingConfig(batchnorm="affine"))
    mt, at = m.main_heads, m.auxiliary_heads
    assert mt.first.conv is at.first.conv and mt.attention.squeeze is at.attention.squeeze
    mt_bns, at_bns = _head_bns(mt), _head_bns(at)
    assert len(mt_bns) == len(at_bns) == 4             # conv1, CA squeeze, CA excite, conv2
    for a, b in zip(mt_bns, at_bns):
        assert a is not b and a.weight is b.weight and a.bias is b.bias
        assert a.running_mean is not b.running_mean
    # the paper's count (Sec. 5.4.5): the same parameters as one shared BN module
    assert param_ids(mt) == param_ids(at)
    assert count_parameters([m]) == count_parameters([small(use_attention=True)])
    with pytest.raises(ValueError, match="sharing.batchnorm"):
        SharingConfig(batchnorm="sometimes")


def _train_batch(B=4):
    torch.manual_seed(5)
    x = torch.randn(B, 3, 96, 32)
    mask = (torch.rand(B, 6, 2) > 0.3).float()
    roi = torch.tensor([[0.0, 1.0], [0.2, 0.9], [0.1, 0.7], [0.3, 1.0]])[:B]
    return x, mask, roi


@pytest.mark.parametrize("mode", ["affine", "module"])
def test_affine_bn_sharing_trains_the_same_function_as_one_bn_module(mode):
    """In training each forward call normalises with its own batch statistics, so sharing
    gamma/beta with per-task running statistics (affine) computes what one shared BN module
    (the release) computes: same init, same loss, same gradients."""
    from mpn_plugin.losses import part_id_loss
    x, mask, roi = _train_batch()
    results = []
    for m_mode in ("module", mode):
        torch.manual_seed(0)
        m = small(use_attention=True, sharing=SharingConfig(batchnorm=m_mode)).train()
        out = m(x, mask, roi)
        pids = torch.tensor([0, 0, 1, 1])
        loss = part_id_loss(out["mt_logits"], pids) + part_id_loss(out["at_logits"], pids)
        loss.backward()
        results.append((loss.item(), [p.grad.clone() for p in m.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("mode,mt_only_stats", [("affine", True), ("none", True),
                                                 ("module", False)])
def test_test_time_bn_statistics_come_from_the_main_task_only(mode, mt_only_stats):
    """The invariant of mpn.sharing.batchnorm affine / none: after training forwards of MT and AT,
    the running statistics of every BN on the test-time path equal those of a copy that
    ran the MT path alone; with one shared module (release) the AT inputs leak into them."""
    import copy
    x, mask, roi = _train_batch()
    torch.manual_seed(0)
    m = small(use_attention=True, sharing=SharingConfig(batchnorm=mode)).train()
    mt_alone = copy.deepcopy(m)
    for _ in range(2):
        m(x, mask, roi)
        with torch.no_grad():
            mt_alone.main_task(mt_alone.backbone(x))
    same = [torch.allclose(a.running_mean, b.running_mean, atol=1e-6)
            and torch.allclose(a.running_var, b.running_var, atol=1e-6)
            for a, b in zip(_head_bns(m.main_heads), _head_bns(mt_alone.main_heads))]
    assert all(same) if mt_only_stats else not any(same)
    if mt_only_stats:  # so the test-time features are those of MT statistics
        with torch.no_grad():
            assert torch.allclose(m.eval()(x), mt_alone.eval()(x), atol=1e-5)


def test_recompute_main_task_bn_statistics_averages_mt_batch_statistics():
    """Precise BN (engine/bn_statistics.py): running statistics of the test-time heads
    become the mean over batches of MT batch statistics; the backbone's are untouched."""
    from mpn_plugin.engine.bn_statistics import recompute_main_task_bn_statistics
    torch.manual_seed(0)
    m = small(use_attention=False).train()
    batches = [{"img": torch.randn(3, 3, 96, 32)} for _ in range(3)]
    m(batches[0]["img"], *prior(3, 6, 2))                     # mixed MT/AT statistics
    backbone_before = copy_buffers(m.backbone)
    used = recompute_main_task_bn_statistics(m, batches, num_batches=2)
    assert used == 2 and m.training
    bn = m.main_heads.first.bn
    means = []
    with torch.no_grad():
        for b in batches[:2]:
            F = m.backbone.eval()(b["img"])
            y = m.main_heads.first.conv.shared_input(F.flatten(2))       # (B, K, D, L)
            means.append(y.permute(0, 3, 1, 2).reshape(-1, bn.num_features).mean(0))
    assert torch.allclose(bn.running_mean, torch.stack(means).mean(0), atol=1e-5)
    assert bn.momentum == 0.1                                 # restored
    for k, v in copy_buffers(m.backbone).items():
        assert torch.equal(v, backbone_before[k]), k


def copy_buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


@pytest.mark.parametrize("conv1,conv2,expected_distinct", [
    (False, False, 12),  # Naive MTL: AT has its own conv1.w, bn1.w/b, conv2.w, bn2.w/b
    (True, False, 9),    # C1-S: AT adds its own conv2.w + bn2.w/b
    (False, True, 9),    # C2-S: AT adds its own conv1.w + bn1.w/b
    (True, True, 6),     # C1-S + C2-S: nothing of its own but the classifier
])
def test_distinct_parameter_tensors_per_sharing_switch(conv1, conv2, expected_distinct):
    m = small(use_attention=False, sharing=SharingConfig(conv1=conv1, conv2=conv2))
    heads = list(m.main_heads.parameters())
    assert len(heads) == 6  # conv1.w, bn1.w, bn1.b, conv2.w, bn2.w, bn2.b (stacked over K)
    distinct = param_ids(m.main_heads) | param_ids(m.auxiliary_heads)
    assert len(distinct) == expected_distinct


def test_mpn_o_test_time_params_equal_baseline():
    mpn_o = build_mpn(10, variant="mpn_o", **SMALL)
    baseline = build_mpn(10, variant="mpn_baseline", **SMALL)
    n = count_parameters(mpn_o.test_time_modules())
    assert n == count_parameters(baseline.test_time_modules())
    # and at train time MPN° has extra parameters only in the AT classifiers
    extra = count_parameters([mpn_o]) - count_parameters([baseline])
    assert extra == count_parameters([mpn_o.main_classifier])


# ----------------------------------------------------------------------------- forward
def test_eval_output_shape_and_ats_not_executed():
    m = build_mpn(7, variant="mpn", backbone="resnet18").eval()
    calls = []
    m.auxiliary_heads.register_forward_hook(lambda *a: calls.append("at"))
    import mpn_plugin.models.mpn as mpn_module
    orig = mpn_module.part_feature_maps
    mpn_module.part_feature_maps = lambda *a, **k: calls.append("pk") or orig(*a, **k)
    try:
        with torch.no_grad():
            out = m(torch.randn(2, 3, 256, 128))
    finally:
        mpn_module.part_feature_maps = orig
    assert out.shape == (2, 6 * 512)
    assert calls == []


def test_build_model_through_torchreid_factory():
    for name in ("mpn", "mpn_o"):
        model = compat.models.build_model(name, num_classes=10, loss="triplet", pretrained=False)
        assert isinstance(model, MPN)
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 384, 128)).shape == (1, 3072)


def test_pretrained_true_offline_resnet_fails_with_message(tmp_path, monkeypatch):
    import urllib.error
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))           # empty cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained=False"):
        compat.models.build_model("mpn", num_classes=10, loss="triplet", pretrained=True)


def test_feature_map_size_resnet50_384x128():
    m = build_mpn(3)
    assert m.backbone.feature_size(384, 128) == (24, 8)
    assert m.backbone.out_channels == 2048


def test_backbone_gets_gradient_through_auxiliary_task_alone():
    m = small(num_classes=4).train()
    x = torch.randn(4, 3, 128, 64)
    M, roi = prior(4, 8, 4, 0.125, 0.875)
    out = m(x, M, roi)
    # AT loss only (MT loss off)
    Fn.cross_entropy(out["at_logits"].reshape(-1, 4), torch.arange(4).repeat(6)).backward()
    g = m.backbone.body.conv1.weight.grad
    assert g is not None and g.abs().sum() > 0
    assert m.main_classifier.weight.grad is None


def test_train_forward_outputs():
    m = small(num_classes=5).train()
    out = m(torch.randn(4, 3, 128, 64), *prior(4, 8, 4))
    assert out["mt_logits"].shape == (6, 4, 5) and out["at_logits"].shape == (6, 4, 5)
    assert out["h"].shape == (4, 6 * 32) and out["g"].shape == (4, 6 * 32)
    base = small(num_classes=5, tasks="at_only", prior_variant="uniform").train()
    out = base(torch.randn(4, 3, 128, 64))
    assert out["h"] is None and out["mt_logits"] is None and out["g"].shape == (4, 192)


def test_return_featuremaps():
    m = small().eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 128, 64), return_featuremaps=True).shape == (1, 512, 8, 4)


def test_grouped_heads_equal_k_separate_heads():
    """The stacked implementation equals K independent conv-BN-ReLU-GMP-conv-BN-ReLU heads."""
    torch.manual_seed(3)
    m = small(use_attention=False).eval()
    heads = m.main_heads
    for bn in (heads.first.bn, heads.second.bn):  # non-trivial running stats
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    F = torch.randn(2, 512, 8, 4)
    got = heads.forward_whole(F)
    D = 32
    for k in range(6):
        w1 = heads.first.conv.weight[k]
        bn1 = heads.first.bn
        sl = slice(k * D, (k + 1) * D)
        y = torch.einsum("oc,bchw->bohw", w1, F)
        y = ((y - bn1.running_mean[sl, None, None])
             / torch.sqrt(bn1.running_var[sl, None, None] + bn1.eps))
        y = torch.relu(y * bn1.weight[sl, None, None] + bn1.bias[sl, None, None])
        v = y.amax(dim=(2, 3))
        bn2 = heads.second.bn
        v = heads.second.conv.weight[k] @ v.T
        v = (v.T - bn2.running_mean[sl]) / torch.sqrt(bn2.running_var[sl] + bn2.eps)
        v = torch.relu(v * bn2.weight[sl] + bn2.bias[sl])
        assert torch.allclose(got[:, k], v, atol=1e-4), k


def test_fast_inference_path_equals_reference_forward():
    """Eval + no_grad: BN folded into the first GEMM, max before bias/ReLU (fast_heads.py):
    the same features as the reference forward, also after the weights change (cache)."""
    from mpn_plugin.models import build_mpn, fast_heads
    torch.manual_seed(0)
    for variant in ("mpn", "mpn_o", "mpn_baseline"):                # MT path; AT path (Baseline)
        model = build_mpn(10, variant=variant, backbone="resnet18", dim=64).eval()
        randomize_batchnorm(model)
        heads = model.main_heads if model.main_heads is not None else model.auxiliary_heads
        for step in range(2):
            x = torch.randn(3, 3, 128, 64)
            with torch.no_grad():
                heads.fast_kernels = False
                ref = model(x)
                heads.fast_kernels = True
                fast = model(x)
            assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-4), (fast - ref).abs().max()
            with torch.no_grad():                          # change weights and BN statistics
                heads.first.conv.weight.mul_(1.5)
                heads.first.bn.running_mean.add_(0.1)
        assert fast_heads.can_fold(heads.first) and not fast_heads.can_fold(heads.first.train())


def test_fused_batch_norm_relu_max_equals_bn_relu_gmp_by_hand():
    """batchnorm_relu_max.py: ReLU(BN(y)) then max over positions, with batch statistics,
    against the three modules run one after the other: output, gradients for y, gamma and
    beta, running statistics; negative BN scales (max -> min), momentum and cumulative
    averaging, a permuted (non-contiguous) input as the AT path passes it."""
    import copy

    from mpn_plugin.models.batchnorm_relu_max import (
        batch_norm_relu_max,
        reference_batch_norm_relu_max,
    )
    torch.manual_seed(0)
    for momentum in (0.1, None):
        bn = torch.nn.BatchNorm1d(6, momentum=momentum).double().train()
        with torch.no_grad():
            bn.weight.copy_(torch.tensor([1.0, -0.5, 2.0, 0.3, -1.0, 0.7]))
            bn.bias.normal_()
        ref_bn = copy.deepcopy(bn)
        for step in range(2):
            base = torch.randn(2, 3, 4, 10, dtype=torch.double)    # (K=2, D=3, B=4, L=10)
            y = base.permute(2, 3, 0, 1).requires_grad_()           # (B, L, K, D), strided view
            y_ref = y.detach().clone().requires_grad_()
            out, ref = batch_norm_relu_max(y, bn), reference_batch_norm_relu_max(y_ref, ref_bn)
            assert out.shape == (4, 2, 3)
            assert torch.allclose(out, ref, atol=1e-12)
            g = torch.randn_like(out)
            got = torch.autograd.grad(out, [y, bn.weight, bn.bias], g)
            want = torch.autograd.grad(ref, [y_ref, ref_bn.weight, ref_bn.bias], g)
            for a, b in zip(got, want):
                assert torch.allclose(a, b, atol=1e-12), (a - b).abs().max()
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                assert torch.allclose(getattr(bn, name).double(), getattr(ref_bn, name).double(),
                                      atol=1e-14), name
    with pytest.raises(ValueError, match="training mode"):
        batch_norm_relu_max(torch.randn(2, 3, 6), bn.eval())


@pytest.mark.parametrize("variant", ["mpn", "mpn_naive_mtl", "mpn_baseline"])
def test_fused_training_path_equals_reference_training_step(variant):
    """PartHeads.fast_kernels in training (the main tasks' K first convs as one 1x1
    convolution; BN + ReLU + GMP fused, fast_heads.py) gives the reference training
    forward's loss, gradients and BN statistics (float64)."""
    import copy

    from mpn_plugin.losses import part_id_loss
    torch.manual_seed(1)
    model = build_mpn(5, variant=variant, backbone="resnet18", dim=16).double().train()
    ref = copy.deepcopy(model)
    for heads in (ref.main_heads, ref.auxiliary_heads):
        if heads is not None:
            heads.fast_kernels = False
    x = torch.randn(4, 3, 96, 32, dtype=torch.double)
    mask = (torch.rand(4, 6, 2) > 0.3).double()
    roi = torch.tensor([[0.0, 1.0], [0.2, 0.9], [0.1, 0.7], [0.3, 1.0]], dtype=torch.double)
    pids = torch.tensor([0, 0, 1, 1])
    losses = []
    for m in (model, ref):
        out = m(x, prior_mask=mask, prior_roi=roi)
        loss = sum(part_id_loss(out[k], pids) for k in ("mt_logits", "at_logits")
                   if out[k] is not None)
        loss = loss + sum(out[k].square().mean() for k in ("h", "g") if out[k] is not None)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-10)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-9), name
    for (name, b), c in zip(model.named_buffers(), ref.buffers()):
        assert torch.allclose(b.double(), c.double(), atol=1e-12), name


# ----------------------------------------------------------------------------- classifier neck
def test_classifier_neck_bn_feeds_centred_features_to_the_classifiers_only():
    """mpn.classifier_neck bn: logits = W_k BN(f_k) with the batch statistics of f_k (by hand);
    h, g and the test-time representation are the paper's, unchanged by the neck."""
    torch.manual_seed(0)
    plain = small(num_classes=5, use_attention=False).train()
    torch.manual_seed(0)
    necked = small(num_classes=5, use_attention=False, classifier_neck="bn").train()
    x, mask, roi = _train_batch()
    out, ref = necked(x, mask, roi), plain(x, mask, roi)
    assert (torch.allclose(out["h"], ref["h"], atol=1e-6)
            and torch.allclose(out["g"], ref["g"], atol=1e-6))
    f = out["mt_features"]                                            # (B, K, D)
    f_bn = (f - f.mean(0)) / torch.sqrt(f.var(0, unbiased=False) + 1e-5)
    W, b = necked.main_classifier.weight, necked.main_classifier.bias  # (K, C, D), (K, C)
    want = torch.einsum("bkd,kcd->kbc", f_bn, W) + b.unsqueeze(1)
    assert torch.allclose(out["mt_logits"], want, atol=1e-4)
    assert not torch.allclose(ref["mt_logits"], want, atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(necked.eval()(x), plain.eval()(x), atol=1e-6)
    # the neck is a classification layer: excluded from the test-time modules
    assert (count_parameters(necked.test_time_modules())
            == count_parameters(plain.test_time_modules()))
    with pytest.raises(ValueError, match="classifier_neck"):
        small(classifier_neck="dropout")


# ----------------------------------------------------------------------------- head GEMM layouts
def _grad_layouts(weight):
    """Record whether each gradient autograd hands to ``weight`` is in the weight's layout
    (a transposed one makes AccumulateGrad copy it: a weight-sized copy per step)."""
    seen = []
    weight.register_hook(lambda g: seen.append(g.is_contiguous()))
    return seen


@pytest.mark.parametrize("path", ["vectors", "channels_last"])
def test_grouped_linear_weight_first_gemms_equal_einsum_and_keep_weight_grad_layout(path):
    """GroupedLinear's part-wise GEMMs run weight first ((W_k x_k^T)^T): the same outputs and
    gradients (x, weight, bias) as the einsum definition, and the weight's gradient arrives
    in the weight's layout (no copy)."""
    import functools

    from mpn_plugin.models.fast_heads import part_wise_linear
    from mpn_plugin.models.part_head import GroupedLinear
    torch.manual_seed(0)
    K, N, cin, cout = 3, 7, 5, 4
    lin = GroupedLinear(K, cin, cout, bias=True).double()
    with torch.no_grad():
        lin.bias.normal_()
    if path == "vectors":           # (B, K, in) -> (B, K, out): second convs, CA, classifiers
        x = torch.randn(N, K, cin, dtype=torch.float64, requires_grad=True)
        ref_fn = lambda x, w, b: torch.einsum("bki,koi->bko", x, w) + b  # noqa: E731
        run = lin
    else:                           # (K, N, in) -> (K, N, out): the AT's first convs
        x = torch.randn(K, N, cin, dtype=torch.float64, requires_grad=True)
        ref_fn = lambda x, w, b: torch.einsum("kni,koi->kno", x, w) + b.unsqueeze(1)  # noqa: E731
        run = functools.partial(part_wise_linear, lin)
    layouts = _grad_layouts(lin.weight)
    g = torch.randn(*((N, K, cout) if path == "vectors" else (K, N, cout)), dtype=torch.float64)
    y = run(x)
    grads = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    w, b = lin.weight.detach().requires_grad_(), lin.bias.detach().requires_grad_()
    x_ref = x.detach().requires_grad_()
    y_ref = ref_fn(x_ref, w, b)
    ref_grads = torch.autograd.grad(y_ref, (x_ref, w, b), g)
    assert torch.allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    assert layouts == [True]


def randomize_batchnorm(model):
    """Non-trivial BN statistics and affine weights (negative scales too), in place."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.0, 1.5)


class FirstArgShapes(TorchDispatchMode):
    """Records the shape of argument ``arg`` (default the first) of every call to the given
    aten ops."""

    def __init__(self, *ops, arg: int = 0):
        super().__init__()
        self.ops, self.arg, self.shapes = ops, arg, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.ops:
            self.shapes.append(tuple(args[self.arg].shape))
        return func(*args, **(kwargs or {}))


def test_mpn_o_training_step_copies_no_head_or_classifier_weight():
    """A whole MPN° training step makes no weight-sized copy for the heads and classifiers
    (a gradient in another layout than its weight's would be copied by AccumulateGrad)."""
    torch.manual_seed(0)
    m = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=16).train()
    weights = {tuple(p.shape) for n, p in m.named_parameters()
               if not n.startswith("backbone") and p.dim() == 3}
    assert len(weights) == 3                      # first convs, second convs, classifiers
    mask, roi = prior(4, 8, 4, 0.1, 0.9)
    with FirstArgShapes(torch.ops.aten.copy_, torch.ops.aten.clone) as copies:
        out = m(torch.randn(4, 3, 128, 64), prior_mask=mask, prior_roi=roi)
        (out["mt_logits"].square().mean() + out["at_logits"].square().mean()).backward()
    assert copies.shapes and not weights & set(copies.shapes)


# ----------------------------------------------------------------------------- cheaper heads
def test_reduced_dim_keeps_mpn_o_equal_to_baseline_and_cuts_the_heads_flops():
    """``mpn.dim`` / ``build_mpn(dim=...)`` below the paper's 512 (the cheaper heads for light
    trunks, docs/RESULTS.md): MPN° keeps the Baseline's test-time parameters, trains and
    infers, and its test graph costs less, by the K first convs' share."""
    from torch.utils.flop_counter import FlopCounterMode

    def flops(model, x):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(x)
        return counter.get_total_flops()

    x = torch.randn(1, 3, 128, 64)
    full = build_mpn(5, variant="mpn_o", backbone="resnet18")                    # D = 512
    cheap = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=128)
    baseline = build_mpn(5, variant="mpn_baseline", backbone="resnet18", dim=128)
    assert (count_parameters(cheap.test_time_modules())
            == count_parameters(baseline.test_time_modules()))
    assert count_parameters([cheap]) - count_parameters([baseline]) == count_parameters(
        [cheap.main_classifier])
    assert cheap.eval()(x).shape == (1, 6 * 128)
    mask, roi = prior(2, 8, 4)
    out = cheap.train()(torch.randn(2, 3, 128, 64), prior_mask=mask, prior_roi=roi)
    assert out["mt_features"].shape == out["at_features"].shape == (2, 6, 128)
    # first convs: K x 32 positions x 512 x D MACs, second convs K x D x D
    saved = 2 * 6 * (32 * 512 * (512 - 128) + (512 * 512 - 128 * 128))
    assert flops(full, x) - flops(cheap, x) == saved


def test_mpn_dim_from_the_config_and_bad_dims_rejected():
    from mpn_plugin.config import get_default_config
    cfg = get_default_config()
    cfg.mpn.backbone, cfg.mpn.dim = "resnet18", 64
    model = build_mpn(5, variant="mpn_o", **vars(MPNConfig.from_cfg(cfg)))
    assert model.feature_dim == 6 * 64
    assert model.main_heads.first.conv.weight.shape == (6, 64, 512)
    with pytest.raises(ValueError, match="mpn.dim"):
        MPNConfig(dim=0)
    with pytest.raises(ValueError, match="mpn.attention_reduction"):
        MPNConfig(dim=2, use_attention=True, attention_reduction=4)


@pytest.mark.parametrize("variant", ["mpn_o", "mpn"])
def test_inference_kernel_is_one_convolution_and_equals_reference(variant):
    """PartHeads.fast_kernels at inference (the default): the K first convs run as ONE 1x1
    convolution on F (BN folded) and give the reference forward's features (up to float
    rounding)."""
    torch.manual_seed(1)
    model = build_mpn(10, variant=variant, backbone="resnet18", dim=64).eval()
    randomize_batchnorm(model)
    heads, x = model.main_heads, torch.randn(3, 3, 128, 64)
    assert heads.fast_kernels                                                   # default
    out = {}
    with torch.no_grad():
        out["fast"] = model(x)
        heads.fast_kernels = False
        out["reference"] = model(x)
        heads.fast_kernels = True
    assert torch.allclose(out["fast"], out["reference"], rtol=1e-4, atol=1e-4)
    # the K first convs run as ONE convolution, no BLAS GEMM on F
    with torch.no_grad(), FirstArgShapes(torch.ops.aten.convolution, arg=1) as convs, \
            FirstArgShapes(torch.ops.aten.mm, torch.ops.aten.bmm) as gemms:
        model(x)
    assert (6 * 64, 512, 1, 1) in convs.shapes                 # the K first convs' weights
    assert not any(len(g) == 2 and g[1] == 512 for g in gemms.shapes)   # no GEMM on F
