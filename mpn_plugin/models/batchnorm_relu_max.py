"""Training-time fusion of BN (batch statistics) + ReLU + global max pooling (Sec. 3.3, Fig. 6).

Every part head starts with ``GMP(ReLU(BN(W x)))``. In training BN normalises with the batch
statistics of the whole (B, L, C) map, so it cannot be folded into W as at inference, and the
reference chain (BN -> ReLU -> amax and their backwards) makes about ten passes over the
largest tensor of the heads: on CPU this costs more than the GEMM of the K first convs
(docs/RESULTS.md, complexity profile). This op computes the same function in a few passes:

* forward: the batch mean and variance of y (one ``var_mean``), the max over positions (and the
  min for channels whose BN scale ``gamma / sigma`` is negative), then BN's affine and ReLU on
  the (B, C) vectors only. Exact: BN's per-channel affine with scale s and ReLU are monotone,
  so ``max_l ReLU(s * y_l + t) = ReLU(s * max_l y_l + t)`` for ``s >= 0`` (min for ``s < 0``).
* backward: BN's gradient with a gradient that is non-zero at one position per (image,
  channel), in closed form: ``dL/dy = k * (G - mean(G) - yhat * mean(G * yhat))`` with
  ``k = gamma / sigma`` is a per-channel affine map of y plus the selected positions' term:
  one dense pass over y and a scatter.
* running statistics are updated exactly as :class:`torch.nn.BatchNorm1d` does (momentum or
  cumulative average, unbiased variance, ``num_batches_tracked``).

Ties: where several positions share the maximum, the reference ``amax`` splits the gradient
among them and this op gives it to one (as ``max_pool2d`` does); both are valid subgradients.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class _BatchNormReLUMax(torch.autograd.Function):
    """y (B, L, *C) -> ReLU(BN(y)).amax(dim=1): (B, *C); see the module docstring."""

    @staticmethod
    def forward(ctx, y, weight, bias, eps):
        yf = y if y.dtype in (torch.float32, torch.float64) else y.float()
        var, mean = torch.var_mean(yf, dim=(0, 1), unbiased=False)
        invstd = torch.rsqrt(var + eps)
        scale = weight.to(yf.dtype) * invstd                        # gamma / sigma per channel
        sel, idx = yf.max(dim=1)                                    # (B, *C)
        negative = scale < 0
        if bool(negative.any()):
            low, low_idx = yf.min(dim=1)
            sel, idx = torch.where(negative, low, sel), torch.where(negative, low_idx, idx)
        out = torch.relu((sel - mean) * scale + bias.to(yf.dtype))
        ctx.save_for_backward(yf, sel, idx, mean, invstd, scale, out)
        ctx.input_dtype, ctx.param_dtype = y.dtype, weight.dtype
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        yf, sel, idx, mean, invstd, scale, out = ctx.saved_tensors
        n = yf.shape[0] * yf.shape[1]
        g = grad_out.to(yf.dtype) * (out > 0)                       # through ReLU, (B, *C)
        yhat_sel = (sel - mean) * invstd
        grad_bias = g.sum(0)                                        # sum over positions of G
        grad_weight = (g * yhat_sel).sum(0)                         # sum of G * yhat
        # dense part: k * (-mean(G) - yhat * mean(G * yhat)) = alpha * y + beta
        alpha = -scale * invstd * grad_weight / n
        beta = scale * (mean * invstd * grad_weight - grad_bias) / n
        grad_y = torch.addcmul(beta, yf, alpha)                     # (B, L, *C)
        grad_y.scatter_add_(1, idx.unsqueeze(1), (scale * g).unsqueeze(1))
        return (grad_y.to(ctx.input_dtype), grad_weight.to(ctx.param_dtype),
                grad_bias.to(ctx.param_dtype), None)


def can_fuse(bn: nn.Module) -> bool:
    """The fused op applies to a plain BatchNorm (not SyncBatchNorm) in training mode with an
    affine transform; anything else takes the reference path."""
    return (isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and not isinstance(bn, nn.SyncBatchNorm) and bn.training and bn.affine)


def batch_norm_relu_max(y: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """``ReLU(bn(y))`` followed by the max over positions, with ``bn`` in training mode.

    Args:
        y (Tensor): (B, L, *C): batch, positions, channels (any strides); ``prod(C)`` must equal
            ``bn.num_features`` (channel c of ``bn`` is entry c of the flattened C).
        bn (BatchNorm): its affine parameters are used and its running statistics updated.

    Returns:
        Tensor: (B, *C), equal to ``relu(bn(y)).amax(dim=1)`` up to float rounding, with the
        same gradients (for y, ``bn.weight``, ``bn.bias``) and the same running statistics.

    Examples::

        >>> bn = nn.BatchNorm1d(6).train()
        >>> y = torch.randn(4, 10, 2, 3)        # B=4, L=10 positions, C=(2, 3) channels
        >>> batch_norm_relu_max(y, bn).shape
        torch.Size([4, 2, 3])
    """
    if not can_fuse(bn):
        raise ValueError("batch_norm_relu_max needs an affine BatchNorm in training mode")
    if y.shape[0] * y.shape[1] <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input of "
                         f"size {tuple(y.shape)}")
    chan = y.shape[2:]
    weight, bias = bn.weight.view(chan), bn.bias.view(chan)
    out, mean, var = _BatchNormReLUMax.apply(y, weight, bias, bn.eps)
    if bn.track_running_stats:
        _update_running_stats(bn, mean.reshape(-1), var.reshape(-1), y.shape[0] * y.shape[1])
    return out.to(y.dtype)


@torch.no_grad()
def _update_running_stats(bn, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    """The running-statistics update of ``torch.nn.BatchNorm*`` in training mode."""
    bn.num_batches_tracked.add_(1)
    momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    unbiased = var * (n / max(n - 1, 1))
    bn.running_mean.mul_(1 - momentum).add_(mean.to(bn.running_mean.dtype), alpha=momentum)
    bn.running_var.mul_(1 - momentum).add_(unbiased.to(bn.running_var.dtype), alpha=momentum)


def reference_batch_norm_relu_max(y: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """The unfused chain, for tests: (B, L, *C) -> (B, *C)."""
    B, L = y.shape[:2]
    chan = y.shape[2:]
    flat = y.reshape(B, L, -1).transpose(1, 2)                      # (B, C, L)
    return torch.relu(bn(flat)).amax(dim=-1).view(B, *chan)
