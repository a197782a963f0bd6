"""models/fast_heads.py: each kernel of the heads' first layer equals the reference Fig. 6
chain of models/part_head.py (PartHeads.fast_kernels False): outputs, gradients (input and
every parameter) and BN running statistics, in training and at inference, for the main tasks
(every head on F) and the auxiliary tasks (head k on P_k), in float64."""
import copy

import pytest
import torch

from mpn_plugin.models import fast_heads
from mpn_plugin.models.part_head import SharingConfig, build_task_heads

K, C, D = 3, 8, 4


def head_sets():
    """MT and AT heads with CA and PSA (shared convs, BN sharing ``affine``), non-trivial BN
    statistics and affine weights (negative scales too), float64."""
    torch.manual_seed(0)
    mt, at = build_task_heads(K, C, D, use_attention=True, attention_reduction=2,
                              sharing=SharingConfig())
    heads = torch.nn.ModuleDict({"mt": mt, "at": at}).double()
    for m in heads.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.0, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return heads


def run(heads, task, x):
    return heads["mt"].forward_whole(x) if task == "mt" else heads["at"].forward_parts(x)


def inputs(task):
    """F (B, C, H, W) for the main tasks, the part maps (B, K, C, h, W) for the auxiliary."""
    shape = (4, C, 6, 2) if task == "mt" else (4, K, C, 2, 2)
    return torch.randn(*shape, dtype=torch.float64)


def fast_and_reference(train):
    fast = head_sets().train(train)
    ref = copy.deepcopy(fast)
    for heads in ref.values():
        heads.fast_kernels = False
    assert all(heads.fast_kernels for heads in fast.values())            # the default
    return fast, ref


@pytest.mark.parametrize("task", ["mt", "at"])
@pytest.mark.parametrize("train", [True, False])
def test_fast_kernels_equal_the_reference_forward_and_gradients(task, train):
    """Training (fused BN + ReLU + GMP) and eval mode with autograd on (the reference runs):
    the same outputs, gradients and running statistics, over two steps."""
    fast, ref = fast_and_reference(train)
    for step in range(2):
        x = inputs(task)
        outs, grads = [], []
        for heads in (fast, ref):
            xi = x.clone().requires_grad_()
            out = run(heads, task, xi)
            params = [p for p in heads.parameters()]
            g = torch.autograd.grad(out, [xi] + params, torch.ones_like(out) + out.detach(),
                                    allow_unused=True)
            outs.append(out)
            grads.append(g)
        assert torch.allclose(outs[0], outs[1], atol=1e-10), (outs[0] - outs[1]).abs().max()
        for (name, _), a, b in zip([("x", None)] + list(fast.named_parameters()), *grads):
            assert (a is None) == (b is None), name
            if a is not None:
                assert torch.allclose(a, b, atol=1e-10), name
        for (name, a), b in zip(fast.named_buffers(), ref.buffers()):
            assert torch.allclose(a.double(), b.double(), atol=1e-12), name


@pytest.mark.parametrize("task", ["mt", "at"])
def test_fast_kernels_equal_the_reference_at_inference(task):
    """Eval mode, autograd off (BN folded, max before the bias and ReLU): the reference's
    features, also after the weights and statistics change (the folded weights' cache)."""
    fast, ref = fast_and_reference(train=False)
    for step in range(2):
        x = inputs(task)
        with torch.no_grad():
            got, want = run(fast, task, x), run(ref, task, x)
        assert torch.allclose(got, want, atol=1e-10), (got - want).abs().max()
        with torch.no_grad():
            for heads in (fast, ref):
                heads[task].first.conv.weight.mul_(1.5)
                heads[task].first.bn.running_mean.add_(0.1)


@pytest.mark.parametrize("task", ["mt", "at"])
def test_a_kernel_runs_exactly_where_it_applies(task):
    """Training and inference without autograd take a kernel; eval mode with autograd on and
    a SyncBatchNorm take the reference (the kernels return None)."""
    fast, _ = fast_and_reference(train=True)
    layer, x = fast[task].first, inputs(task)
    kernel = fast_heads.whole_map_max if task == "mt" else fast_heads.part_maps_max
    assert kernel(layer, x).shape == (4, K, D)
    layer.eval()
    assert kernel(layer, x) is None
    with torch.no_grad():
        assert kernel(layer, x).shape == (4, K, D)
    layer.train()
    layer.bn = torch.nn.SyncBatchNorm(K * D).double()
    assert kernel(layer, x) is None
