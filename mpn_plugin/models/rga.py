"""RGA-S: spatial relation-aware global attention, the backbone attention of MPN*.

MPN* (MPN Sec. 5.4.1, Table 5) equips MPN's backbone with "the spatial attention module in
[59]" (RGA-SC: Zhang et al., "Relation-Aware Global Attention for Person Re-identification",
CVPR 2020), "hyper-parameters of the attention module kept the same as in the original paper".
For a feature map X of C channels and N = H*W positions x_i, RGA-S (RGA Sec. 3.2, Fig. 3):

* pairwise relations ``r_ij = theta(x_i)^T phi(x_j)``: the N x N relation matrix R, with the
  embedding functions theta, phi = 1x1 conv (C -> C/s) + BN + ReLU;
* relation vector of position i: ``[R(i, :), R(:, i)]`` (its outgoing and incoming relations,
  2N values, raster-scan order), embedded by 1x1 conv (2N -> N/s) + BN + ReLU;
* unary term: ``pool_c(psi(x_i))``, psi = 1x1 conv (C -> C/s) + BN + ReLU, then the mean over
  channels (one value);
* ``y_i = [pool_c(psi(x_i)), embedded relation vector]`` (1 + N/s channels);
* ``a_i = sigmoid(W2 ReLU(W1 y_i))``: W1 = 1x1 conv + BN shrinking the channels by a ratio,
  W2 = 1x1 conv + BN to one channel; the output is ``a_i * x_i``.

Hyper-parameters, "kept the same as in the original paper": RGA Sec. 4.1 (implementation
details) puts one module after each of ResNet-50's four residual stages (conv2_x .. conv5_x,
last stride 1) and sets the reduction ratios to 8; the authors' release (microsoft/
Relation-Aware-Global-Attention-Networks: ``RGA_Module(cha_ratio=8, spa_ratio=8, down_ratio=8)``,
``ResNet50_RGA_Model(scale=8, d_scale=8)``) uses 8 for all three: channel reduction C -> C/8,
relation (spatial) reduction 2N -> N/8, W1 reduction 8.
The relation embedding's input has 2N channels, so each module is built for one map size
(hence one input size). Where N/8 or (1 + N/8)/8 rounds down to 0 (N < 8 or N < 56, e.g. the
ResNet's 6x3 last stages at 96x48), that width is clamped to 1 channel.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn

BACKBONE_ATTENTIONS = ("none", "rga_s")


class Conv1x1BN(nn.Sequential):
    """1x1 conv (no bias) + BN (+ ReLU): the embedding functions theta, phi, psi and the
    relation embedding of RGA Sec. 3.2 (with ReLU); W1 (with ReLU) and W2 (without) of the score.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        relu (bool): end with a ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True):
        layers = [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        super().__init__(*layers, *([nn.ReLU(inplace=True)] if relu else []))


def relation_vectors(theta_x: torch.Tensor, phi_x: torch.Tensor) -> torch.Tensor:
    """``[R(i, :), R(:, i)]`` at every position i, with ``r_ij = theta(x_i)^T phi(x_j)``
    (RGA Sec. 3.2). (B, C', H, W) x 2 -> (B, 2N, H, W), N = H*W: channel j < N holds the
    outgoing relation r_ij, channel N + j the incoming r_ji."""
    B, _, H, W = theta_x.shape
    r = theta_x.flatten(2).transpose(1, 2) @ phi_x.flatten(2)   # R: (B, N, N), R[b, i, j] = r_ij
    # (B, channel, position): outgoing [c, i] = r_ic = R^T[c, i]; incoming [c, i] = r_ci = R[c, i]
    return torch.cat([r.transpose(1, 2), r], 1).reshape(B, 2 * H * W, H, W)


class SpatialRGA(nn.Module):
    """RGA-S (RGA Sec. 3.2): a spatial attention map learnt from each position's global
    relations and its own feature, multiplied onto the feature map.

    Args:
        channels (int): C of the input map.
        height (int): H of the input map (the module is built for one map size).
        width (int): W of the input map.
        channel_ratio (int): C -> C/ratio in theta, phi, psi (8 in [59]).
        spatial_ratio (int): 2N -> N/ratio in the relation embedding (8 in [59]).
        down_ratio (int): W1 shrinks 1 + N/spatial_ratio channels by this ratio (8 in [59]).

    Examples::

        >>> rga = SpatialRGA(256, 32, 16)
        >>> rga(torch.randn(2, 256, 32, 16)).shape
        torch.Size([2, 256, 32, 16])
    """

    def __init__(self, channels: int, height: int, width: int, channel_ratio: int = 8,
                 spatial_ratio: int = 8, down_ratio: int = 8):
        super().__init__()
        self.height, self.width = int(height), int(width)
        n = self.height * self.width
        inter_channels = max(1, channels // channel_ratio)
        inter_spatial = max(1, n // spatial_ratio)
        self.theta = Conv1x1BN(channels, inter_channels)
        self.phi = Conv1x1BN(channels, inter_channels)
        self.psi = Conv1x1BN(channels, inter_channels)
        self.relation_embedding = Conv1x1BN(2 * n, inter_spatial)
        score_in = 1 + inter_spatial
        self.score = nn.Sequential(Conv1x1BN(score_in, max(1, score_in // down_ratio)),   # W1
                                   Conv1x1BN(max(1, score_in // down_ratio), 1, relu=False))  # W2

    def extra_repr(self) -> str:
        return f"map={self.height}x{self.width}"

    def relation_features(self, x: torch.Tensor) -> torch.Tensor:
        """r_i = [R(i, :), R(:, i)] of every position: (B, C, H, W) -> (B, 2N, H, W)."""
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"RGA-S was built for a {self.height}x{self.width} feature map (its relation "
                f"embedding takes 2N = {2 * self.height * self.width} channels), got "
                f"{x.shape[-2]}x{x.shape[-1]}: build it for the input size you feed")
        return relation_vectors(self.theta(x), self.phi(x))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """a = sigmoid(W2 ReLU(W1 y)): (B, C, H, W) -> (B, 1, H, W) in (0, 1)."""
        y = torch.cat([self.psi(x).mean(1, keepdim=True),                       # (B, 1, H, W)
                       self.relation_embedding(self.relation_features(x))], 1)  # (B, 1+N/s, H, W)
        return torch.sigmoid(self.score(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention_map(x)


class StageAttention(nn.Module):
    """One :class:`SpatialRGA` after each named stage of a sequential trunk (MPN*, Sec. 5.4.1;
    RGA Sec. 4.1: after each residual stage of ResNet-50). Each module's map size is measured
    by running the trunk once on an input of ``input_size``.

    The model owns it (``MPN.backbone_attention``, a top-level child beside ``backbone``, so
    torchreid's ``staged_lr``/``open_layers`` treat it as a new layer) and passes it to the
    trunk: ``backbone(x, attention)`` calls :meth:`forward` after every stage.

    Args:
        body (nn.Sequential): the trunk (not registered here: the backbone owns it).
        stage_ends (sequence of str): names of the children of ``body`` followed by RGA-S.
        input_size (tuple): (height, width) of the images the model is built for.
        **ratios: ``channel_ratio``, ``spatial_ratio``, ``down_ratio`` of :class:`SpatialRGA`.

    Examples::

        >>> from mpn_plugin.models.backbones import TorchreidBackbone
        >>> bb = TorchreidBackbone('resnet18')
        >>> att = StageAttention(bb.body, ('layer1', 'layer2', 'layer3', 'layer4'), (128, 64))
        >>> sorted(att.map_sizes().items())[0]
        ('layer1', (32, 16))
        >>> bb(torch.zeros(2, 3, 128, 64), att).shape
        torch.Size([2, 512, 8, 4])
    """

    def __init__(self, body: nn.Sequential, stage_ends: Sequence[str],
                 input_size: Tuple[int, int], **ratios):
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        names = [name for name, _ in body.named_children()]
        missing = [s for s in stage_ends if s not in names]
        if missing:
            raise ValueError(f"stages {missing} are not children of the trunk ({names})")
        shapes: Dict[str, Tuple[int, int, int]] = {}
        p = next(body.parameters())
        was_training = body.training
        body.eval()
        with torch.no_grad():
            x = torch.zeros(1, 3, *self.input_size, device=p.device, dtype=p.dtype)
            for name, stage in body.named_children():
                x = stage(x)
                if name in stage_ends:
                    shapes[name] = tuple(x.shape[1:])
        body.train(was_training)
        self.stages = nn.ModuleDict({name: SpatialRGA(c, h, w, **ratios)
                                     for name, (c, h, w) in shapes.items()})

    def map_sizes(self) -> Dict[str, Tuple[int, int]]:
        """Stage name -> (H, W) of the map its RGA-S module was built for."""
        return {name: (m.height, m.width) for name, m in self.stages.items()}

    def check_input(self, x: torch.Tensor, model: str = "the backbone") -> None:
        """Raise if ``x`` (B, 3, H, W) is not of the size the modules were built for."""
        size = tuple(x.shape[-2:])
        if size != self.input_size:
            h, w = self.input_size
            raise ValueError(
                f"{model} with backbone_attention='rga_s' (MPN*) was built for {h}x{w} inputs, "
                f"got {size[0]}x{size[1]}: RGA-S relates all H*W positions of each stage's map, "
                f"so its layers depend on the input size. Rebuild the model for this size "
                f"(config: data.height {size[0]} data.width {size[1]}; Python: "
                f"build_mpn(..., input_size=({size[0]}, {size[1]}))) or resize the images to "
                f"{h}x{w}")

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """RGA-S after stage ``name`` (identity for the other stages)."""
        return self.stages[name](x) if name in self.stages else x
