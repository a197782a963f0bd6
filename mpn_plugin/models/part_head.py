"""The K part heads of MPN (Sec. 3.3, Fig. 3, Fig. 6).

Head k = 1x1 conv (C -> D) + BN + ReLU -> global max pooling (GMP) -> optional channel
attention (CA) -> 1x1 conv (D -> D) + BN + ReLU, giving f_k (main task, input F) or z_k
(auxiliary task, input P_k). D = 512 in the paper.

The K heads of one task are stored stacked (one weight of shape (K, out, in) per layer) so that
all K first convs on F run as one GEMM (they share their input) and all heads of a batch run in
a few batched matmuls; head k is slice k of every stacked weight. Parameter space alignment
(PSA) is hard sharing of layers between the MT and AT head sets: two :class:`PartHeads` built
with :func:`build_task_heads` hold the *same* module objects for shared layers.

This module is the reference: each forward is the paper's chain, layer by layer. By default
:class:`PartHeads` runs its first layer (1x1 conv + BN + ReLU + GMP, the costliest) through the
kernels of :mod:`.fast_heads` (BN + ReLU + GMP fused in training, BN folded at inference): the
same function and gradients up to float rounding (tests/test_fast_heads.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from . import fast_heads


class GroupedLinear(nn.Module):
    """K independent linear maps (equivalently K 1x1 convs), applied part-wise.

    Args:
        num_groups (int): K.
        in_features (int): input channels of each map.
        out_features (int): output channels of each map.
        bias (bool): add a bias (off when a BN follows).
        init_std (float, optional): normal init with this std (classifiers, as the authors'
            release: 0.001); default He (fan-in) init as for convs.

    Examples::

        >>> lin = GroupedLinear(6, 2048, 512)
        >>> lin(torch.zeros(4, 6, 2048)).shape      # part-wise vectors
        torch.Size([4, 6, 512])
        >>> lin(torch.zeros(4, 6, 2048, 32)).shape  # part-wise maps, L = h*w positions
        torch.Size([4, 6, 512, 32])
        >>> lin.shared_input(torch.zeros(4, 2048, 192)).shape  # one input for all K maps
        torch.Size([4, 6, 512, 192])
    """

    def __init__(self, num_groups: int, in_features: int, out_features: int, bias: bool = False,
                 init_std: Optional[float] = None):
        super().__init__()
        self.num_groups, self.in_features, self.out_features = num_groups, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_groups, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(num_groups, out_features)) if bias else None
        if init_std is None:
            nn.init.kaiming_normal_(self.weight.view(-1, in_features), mode="fan_in",
                                    nonlinearity="relu")
        else:
            nn.init.normal_(self.weight, 0.0, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # (B, K, in) -> (B, K, out)
            # weight first, (K, out, in) x (K, in, B): the weight's gradient comes out in the
            # weight's own layout (an einsum gives it transposed, and autograd then copies it)
            y = torch.bmm(self.weight, x.permute(1, 2, 0)).permute(2, 0, 1)
            return y if self.bias is None else y + self.bias
        # (B, K, in, L) -> (B, K, out, L): K batched GEMMs
        y = torch.matmul(self.weight.unsqueeze(0), x)
        return y if self.bias is None else y + self.bias.unsqueeze(-1)

    def shared_input(self, x: torch.Tensor) -> torch.Tensor:
        """All K maps on the same input: (B, in, L) -> (B, K, out, L) as ONE GEMM."""
        B, _, L = x.shape
        y = torch.matmul(self.weight.view(-1, self.in_features), x)   # (B, K*out, L)
        y = y.view(B, self.num_groups, self.out_features, L)
        return y if self.bias is None else y + self.bias.unsqueeze(-1)

    def extra_repr(self) -> str:
        return (f"groups={self.num_groups}, in={self.in_features}, out={self.out_features}, "
                f"bias={self.bias is not None}")


class GroupedBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the K*D channels of K stacked heads (one BN per head and channel).

    Accepts (B, K, D) or (B, K, D, L); statistics per (k, d) channel over batch (and L).
    """

    def __init__(self, num_groups: int, num_features: int):
        super().__init__(num_groups * num_features)
        self.num_groups, self.group_features = num_groups, num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = super().forward(x.reshape(shape[0], -1, *shape[3:]))
        return y.view(shape)


class ConvBNReLU(nn.Module):
    """1x1 conv + BN + ReLU for K stacked heads (Sec. 3.3: "each Conv layer is followed by one
    BN layer and one ReLU layer")."""

    def __init__(self, num_parts: int, in_channels: int, out_channels: int,
                 bn: Optional[nn.Module] = None, conv: Optional[GroupedLinear] = None):
        super().__init__()
        self.conv = (conv if conv is not None
                     else GroupedLinear(num_parts, in_channels, out_channels))
        self.bn = bn if bn is not None else GroupedBatchNorm(num_parts, out_channels)

    def forward(self, x: torch.Tensor, shared_input: bool = False) -> torch.Tensor:
        y = self.conv.shared_input(x) if shared_input else self.conv(x)
        return torch.relu(self.bn(y))


class ChannelAttention(nn.Module):
    """SE-style channel attention on the GMP vector (Fig. 6, [47]), K stacked modules.

    Layout of the authors' release: 1x1 conv D -> D/r + BN -> ReLU -> 1x1 conv D/r -> D + BN ->
    sigmoid, r = 4; the output reweights the D channels of the vector.
    """

    def __init__(self, num_parts: int, channels: int, reduction: int = 4):
        super().__init__()
        hidden = channels // reduction
        self.squeeze = GroupedLinear(num_parts, channels, hidden)
        self.squeeze_bn = GroupedBatchNorm(num_parts, hidden)
        self.excite = GroupedLinear(num_parts, hidden, channels)
        self.excite_bn = GroupedBatchNorm(num_parts, channels)

    def shared_copy(self, bn_sharing: str) -> "ChannelAttention":
        """A CA for the other task: the same convs, BNs shared as ``bn_sharing`` says
        (:func:`shared_batchnorm`)."""
        copy = ChannelAttention.__new__(ChannelAttention)
        nn.Module.__init__(copy)
        copy.squeeze, copy.excite = self.squeeze, self.excite
        copy.squeeze_bn = shared_batchnorm(self.squeeze_bn, bn_sharing)
        copy.excite_bn = shared_batchnorm(self.excite_bn, bn_sharing)
        return copy

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, K, D)
        a = torch.relu(self.squeeze_bn(self.squeeze(v)))
        a = torch.sigmoid(self.excite_bn(self.excite(a)))
        return v * a


#: pooling of the main tasks over the positions of F (``mpn.mt_pooling``): ``max`` is the
#: paper's GMP (Fig. 6); ``avg`` (global average pooling, as BoT's global feature) and ``gem``
#: (generalised mean, p = :data:`GEM_P`, as fast-reid's SBS) are options beyond the paper
POOLINGS = ("max", "avg", "gem")
#: exponent of GeM pooling (fast-reid's initial p; fixed here)
GEM_P = 3.0


def pool_positions(y: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool (..., L) over its last axis: max (GMP), avg, or GeM
    ``(mean_l max(y_l, eps)^p)^(1/p)`` with p = :data:`GEM_P` (y >= 0 after the ReLU)."""
    if pooling == "max":
        return y.amax(dim=-1)
    if pooling == "avg":
        return y.mean(dim=-1)
    if pooling == "gem":
        return y.clamp(min=1e-6).pow(GEM_P).mean(dim=-1).pow(1.0 / GEM_P)
    raise ValueError(f"pooling '{pooling}' is not one of {POOLINGS}")


class PartHeads(nn.Module):
    """The K part heads of one task (MT or AT); see the module docstring.

    Args:
        first (ConvBNReLU): first 1x1 conv + BN + ReLU (channel selection, "C1").
        attention (ChannelAttention or None): optional CA.
        second (ConvBNReLU): second 1x1 conv + BN + ReLU ("C2").
        pooling (str): pooling of the main tasks over F (:data:`POOLINGS`; ``max``: GMP).

    Attributes:
        fast_kernels (bool): the first layer and GMP run through :mod:`.fast_heads` where a
            kernel applies (default ``True``); ``False`` runs the reference chain (tests, the
            benchmark's ``fast_kernels=0``, hooks on the first BN).
    """

    def __init__(self, first: ConvBNReLU, second: ConvBNReLU,
                 attention: Optional[ChannelAttention] = None, pooling: str = "max"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"part-head pooling '{pooling}' is not one of {POOLINGS} "
                             f"(mpn.mt_pooling; 'max' is the paper's GMP)")
        self.first = first
        self.attention = attention
        self.second = second
        #: pooling of :meth:`forward_whole` (:data:`POOLINGS`): ``max`` (GMP, the paper);
        #: ``avg`` / ``gem`` are options beyond the paper (``mpn.mt_pooling``)
        self.pooling = pooling
        self.fast_kernels = True

    @property
    def num_parts(self) -> int:
        return self.first.conv.num_groups

    def _vector_stage(self, v: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            v = self.attention(v)
        return self.second(v)                               # (B, K, D)

    def forward_whole(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Main tasks: every head on the whole F. (B, C, H, W) -> (B, K, D)."""
        v = None
        if self.fast_kernels and self.pooling == "max":     # the kernels rely on max pooling
            v = fast_heads.whole_map_max(self.first, feature_map)
        if v is None:
            B, C = feature_map.shape[:2]
            y = self.first(feature_map.reshape(B, C, -1), shared_input=True)  # (B, K, D, H*W)
            v = pool_positions(y, self.pooling)                               # GMP: (B, K, D)
        return self._vector_stage(v)

    def forward_parts(self, part_maps: torch.Tensor) -> torch.Tensor:
        """Auxiliary tasks: head k on P_k. (B, K, C, h, W) -> (B, K, D)."""
        v = fast_heads.part_maps_max(self.first, part_maps) if self.fast_kernels else None
        if v is None:
            B, K, C = part_maps.shape[:3]
            y = self.first(part_maps.reshape(B, K, C, -1))                    # (B, K, D, h*W)
            v = y.amax(dim=-1)                                                # GMP: (B, K, D)
        return self._vector_stage(v)


#: how a hard-shared layer's BN is shared between MT and AT (``mpn.sharing.batchnorm``)
BN_SHARING = ("module", "affine", "none")


@dataclass
class SharingConfig:
    """Which layers the MT and AT of each part share (PSA, Table 1 columns C1-S, C2-S, CA).

    Attributes:
        conv1 (bool): share the first 1x1 conv (C1-S).
        conv2 (bool): share the second 1x1 conv (C2-S).
        attention (bool): share the CA module (MPN shares it).
        batchnorm (str): the BNs of shared layers (after a shared conv, inside a shared CA):

            * ``module``: one BN module for both tasks (the authors' release). In training
              each forward call normalises with its own batch statistics, but the running
              statistics used at test time mix MT inputs (GMP over the whole F) and AT inputs
              (strips of the masked, resized F), while only MT runs at test time.
            * ``affine`` (default): shared BN parameters (gamma, beta), running statistics per
              task.
              Training is the same function as ``module``; at test time MT is normalised with
              MT statistics only. The parameter count is that of ``module`` (Sec. 5.4.5: the
              same parameters at training and test time, classifiers aside).
            * ``none``: task-specific BN (own gamma, beta and statistics) after shared convs.

            ``True``/``False`` are accepted for ``module``/``none``.
    """
    conv1: bool = True
    conv2: bool = True
    attention: bool = True
    batchnorm: str = "affine"

    def __post_init__(self):
        if isinstance(self.batchnorm, bool):
            self.batchnorm = "module" if self.batchnorm else "none"
        if self.batchnorm not in BN_SHARING:
            raise ValueError(f"mpn.sharing.batchnorm='{self.batchnorm}' is not one of {BN_SHARING}")


def shared_batchnorm(bn: "GroupedBatchNorm", mode: str) -> "GroupedBatchNorm":
    """The AT's BN for a layer whose conv is shared with the MT BN ``bn`` (see
    :class:`SharingConfig`): ``bn`` itself (``module``), a BN holding the same gamma/beta
    Parameters with its own running statistics (``affine``), or a new BN (``none``)."""
    if mode == "module":
        return bn
    own = GroupedBatchNorm(bn.num_groups, bn.group_features)
    if mode == "affine":
        own.weight, own.bias = bn.weight, bn.bias
    return own


def build_task_heads(num_parts: int, in_channels: int, dim: int = 512, use_attention: bool = False,
                     attention_reduction: int = 4, sharing: SharingConfig = SharingConfig(),
                     with_main: bool = True, with_auxiliary: bool = True,
                     main_pooling: str = "max"
                     ) -> Tuple[Optional[PartHeads], Optional[PartHeads]]:
    """Build the MT and AT head sets with the requested hard sharing.

    ``main_pooling`` is the MT heads' pooling over F (:data:`POOLINGS`, ``max`` = GMP, the
    paper); the AT heads always max-pool their part maps.

    Returns:
        (mt_heads, at_heads); either is None when that task is absent (MT Only / Baseline).
    """
    def conv(cin, cout, share_with=None, share=False):
        if share_with is not None and share:
            bn = shared_batchnorm(share_with.bn, sharing.batchnorm)
            if bn is share_with.bn:
                return share_with
            return ConvBNReLU(num_parts, cin, cout, bn=bn, conv=share_with.conv)
        return ConvBNReLU(num_parts, cin, cout)

    def attention(share_with=None, share=False):
        if not use_attention:
            return None
        if share_with is not None and share:
            if sharing.batchnorm == "module":
                return share_with
            return share_with.shared_copy(sharing.batchnorm)
        return ChannelAttention(num_parts, dim, attention_reduction)

    mt = None
    if with_main:
        mt = PartHeads(conv(in_channels, dim), conv(dim, dim), attention(), pooling=main_pooling)
    at = None
    if with_auxiliary:
        ref = mt if mt is not None else None
        at = PartHeads(
            conv(in_channels, dim, ref.first if ref else None, sharing.conv1),
            conv(dim, dim, ref.second if ref else None, sharing.conv2),
            attention(ref.attention if ref else None, sharing.attention),
        )
    return mt, at
