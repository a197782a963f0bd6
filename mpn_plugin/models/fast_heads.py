"""Fast kernels of the part heads' first layer, ``GMP(ReLU(BN(W x)))`` (Sec. 3.3, Fig. 6).

The first 1x1 conv + BN + ReLU + global max pooling of every head is where the heads spend
their time (docs/RESULTS.md, complexity profile). :class:`~.part_head.PartHeads` runs it through
the two kernels below by default (``PartHeads.fast_kernels``); each computes the reference
chain of :class:`~.part_head.ConvBNReLU` followed by ``amax``, with the same outputs, gradients
and BN running statistics up to float rounding (tests/test_fast_heads.py):

* training (BN normalising with batch statistics, :func:`~.batchnorm_relu_max.can_fuse`): the
  main tasks' K first convs run as ONE 1x1 convolution on F (the kernel that runs the backbone:
  oneDNN on CPU, cuDNN on CUDA), the auxiliary tasks' as K GEMMs over all images of a part
  (:func:`part_wise_linear`); BN + ReLU + GMP then run fused
  (:func:`~.batchnorm_relu_max.batch_norm_relu_max`);
* inference (eval mode, running statistics, autograd off): BN folded into the conv weights
  (:func:`folded`) and the max over positions taken before the bias and the ReLU (both
  monotone), so the element-wise work runs on (B, K*D) vectors instead of (B, K*D, L) maps.

Elsewhere (SyncBatchNorm, eval mode with autograd on) the kernels return None and the heads
run the reference. A ``layer`` here is a :class:`~.part_head.ConvBNReLU`: ``layer.conv`` holds
the K stacked weights (K, out, in) (and an optional bias (K, out)), ``layer.bn`` the BN over
its K*out channels.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .batchnorm_relu_max import batch_norm_relu_max, can_fuse


def part_wise_linear(linear: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Map k of a ``GroupedLinear`` on its own input, positions first: (K, N, in) -> (K, N, out),
    K GEMMs over N = B*L positions (all images of part k at once).

    Computed weight first, ``(W_k x_k^T)^T``: the result is a transposed view of a (K, out, N)
    tensor, and the weight's gradient ``G_k^T x_k`` comes out in the weight's own (K, out, in)
    layout (``x_k W_k^T`` gives it as (K, in, out), which autograd copies into the weight's
    layout: a weight-sized copy per step).

    Args:
        linear (GroupedLinear): weight (K, out, in), optional bias (K, out).
        x (Tensor): (K, N, in).

    Examples::

        >>> from mpn_plugin.models.part_head import GroupedLinear
        >>> part_wise_linear(GroupedLinear(6, 64, 16), torch.zeros(6, 40, 64)).shape
        torch.Size([6, 40, 16])
    """
    y = torch.bmm(linear.weight, x.transpose(1, 2)).transpose(1, 2)
    return y if linear.bias is None else y + linear.bias.unsqueeze(1)


def _whole_map_conv(feature_map: torch.Tensor, weight: torch.Tensor,
                    bias: Optional[torch.Tensor]) -> torch.Tensor:
    """All K maps on the same input as ONE 1x1 convolution: (B, in, H, W) -> (B, K*out, H*W).
    ``weight`` (K, out, in) or (K*out, in) is viewed as (K*out, in, 1, 1), so its gradient
    comes back in its own layout (no copy)."""
    weight = weight.reshape(-1, weight.shape[-1], 1, 1)
    return F.conv2d(feature_map, weight, bias).flatten(2)


def can_fold(layer: nn.Module) -> bool:
    """Eval mode with running statistics: the layer's BN is a fixed per-channel affine map that
    :func:`folded` can fold into the conv.

    Examples::

        >>> from mpn_plugin.models.part_head import ConvBNReLU
        >>> layer = ConvBNReLU(6, 64, 16)
        >>> can_fold(layer.eval()), can_fold(layer.train())
        (True, False)
    """
    return not layer.training and not layer.bn.training and layer.bn.track_running_stats


def folded(layer: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """The layer's BN folded into its conv: ``bn(W x) = W' x + b'`` with ``W' = s W``,
    ``b' = beta - s mu`` and ``s = gamma / sqrt(var + eps)``.

    Cached on the layer (not a buffer or state entry) until the weights or statistics change;
    recomputed on every call under tracing or ``torch.compile``.

    Returns:
        (W' (K*out, in), b' (K*out,)).

    Examples::

        >>> from mpn_plugin.models.part_head import ConvBNReLU
        >>> weight, bias = folded(ConvBNReLU(6, 64, 16).eval())
        >>> weight.shape, bias.shape
        (torch.Size([96, 64]), torch.Size([96]))
    """
    bn, w = layer.bn, layer.conv.weight
    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()
    key = None if tracing else tuple(
        (t.data_ptr(), t._version) for t in (w, bn.weight, bn.bias, bn.running_mean,
                                             bn.running_var))
    cache = getattr(layer, "_folded_cache", None)
    if cache is None or key is None or cache[0] != key:
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            weight = w.reshape(-1, w.shape[-1]) * scale.unsqueeze(1)
            bias = bn.bias - scale * bn.running_mean
            if layer.conv.bias is not None:
                bias = bias + scale * layer.conv.bias.reshape(-1)
        cache = (key, weight, bias)
        if key is not None:
            object.__setattr__(layer, "_folded_cache", cache)   # not a buffer/state entry
    return cache[1], cache[2]


def _folds(layer: nn.Module) -> bool:
    """The inference kernel applies: BN foldable and autograd off."""
    return can_fold(layer) and not torch.is_grad_enabled()


def whole_map_max(layer: nn.Module, feature_map: torch.Tensor) -> Optional[torch.Tensor]:
    """The main tasks' first layer and GMP, every head on the whole F:
    ``layer(F, shared_input=True).amax(-1)``, (B, in, H, W) -> (B, K, out), or None where no
    kernel applies (the caller runs the reference).

    Training: one 1x1 convolution, then BN + ReLU + GMP fused. Inference: BN folded into that
    convolution, max over positions before the bias and the ReLU.

    Examples::

        >>> from mpn_plugin.models.part_head import ConvBNReLU
        >>> layer = ConvBNReLU(6, 64, 16).train()
        >>> whole_map_max(layer, torch.randn(2, 64, 8, 4)).shape
        torch.Size([2, 6, 16])
    """
    B, K = feature_map.shape[0], layer.conv.num_groups
    if can_fuse(layer.bn):
        conv = layer.conv
        bias = None if conv.bias is None else conv.bias.reshape(-1)
        y = _whole_map_conv(feature_map, conv.weight, bias).transpose(1, 2)  # (B, L, K*out)
        return batch_norm_relu_max(y, layer.bn).view(B, K, -1)
    if _folds(layer):
        weight, bias = folded(layer)
        y = _whole_map_conv(feature_map, weight, None).amax(dim=-1) + bias   # (B, K*out)
        return torch.relu(y).view(B, K, -1)
    return None


def part_maps_max(layer: nn.Module, part_maps: torch.Tensor) -> Optional[torch.Tensor]:
    """The auxiliary tasks' first layer and GMP, head k on P_k: ``layer(P).amax(-1)``,
    (B, K, in, h, W) -> (B, K, out), or None where no kernel applies.

    Training: K GEMMs over all images of a part (:func:`part_wise_linear`), then BN + ReLU +
    GMP fused. Inference: BN folded into those GEMMs, max over positions before the bias and
    the ReLU.

    Examples::

        >>> from mpn_plugin.models.part_head import ConvBNReLU
        >>> layer = ConvBNReLU(6, 64, 16).eval()
        >>> with torch.no_grad():
        ...     part_maps_max(layer, torch.randn(2, 6, 64, 2, 4)).shape
        torch.Size([2, 6, 16])
    """
    fuse = can_fuse(layer.bn)
    if not fuse and not _folds(layer):
        return None
    B, K, C = part_maps.shape[:3]
    x = part_maps.permute(1, 0, 3, 4, 2).reshape(K, B, -1, C)              # (K, B, h*W, C)
    L = x.shape[2]
    if fuse:
        y = part_wise_linear(layer.conv, x.reshape(K, B * L, C))            # (K, B*L, out)
        y = y.view(K, B, L, -1).permute(1, 2, 0, 3)                         # (B, L, K, out) view
        return batch_norm_relu_max(y, layer.bn)
    weight, bias = folded(layer)                                            # (K*out, in)
    y = torch.bmm(x.reshape(K, B * L, C), weight.view(K, -1, C).transpose(1, 2))
    y = y.view(K, B, L, -1).amax(dim=2) + bias.view(K, 1, -1)               # (K, B, out)
    return torch.relu(y).transpose(0, 1)
