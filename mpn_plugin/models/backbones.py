"""Backbones that yield the feature map F of MPN (Sec. 3.3), reusing torchreid's definitions.

ResNets are built with the last spatial down-sampling removed (``last_stride=1``, [19]), so
F is 24x8 at 384x128 (stride 16). OSNet (stride 16 as shipped) is offered for light CPU runs.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple

import torch
import torch.nn as nn

from .. import compat

_RESNETS = {
    # name: (block name in torchreid.models.resnet, layers)
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet34": ("BasicBlock", [3, 4, 6, 3]),
    "resnet50": ("Bottleneck", [3, 4, 6, 3]),
    "resnet101": ("Bottleneck", [3, 4, 23, 3]),
}
_OSNETS = ("osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25")

PRETRAINED_OFFLINE_MESSAGE = (
    "pretrained=True would download ImageNet weights, and this machine is offline. Use "
    "pretrained=False (train from scratch, or init from an IDE checkpoint with "
    "model.init_weights=/path/to/ide/model.pth.tar), or give a local torchvision/torchreid "
    "weights file with model.backbone_weights=/path/to/weights.pth.")


class TorchreidBackbone(nn.Module):
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
        elif name in _OSNETS:
            net = compat.models.build_model(name, num_classes=1, loss="softmax", pretrained=False,
                                            use_gpu=False)
            self.body = nn.Sequential()
            for part in ("conv1", "maxpool", "conv2", "conv3", "conv4", "conv5"):
                self.body.add_module(part, getattr(net, part))
            self.out_channels = net.conv5[-1].out_channels if hasattr(net.conv5[-1], "out_channels") \
                else 512
        else:
            raise ValueError(f"unknown backbone '{name}'; choose one of {sorted(BACKBONES)}")
        self._sizes: Dict[Tuple[int, int], Tuple[int, int]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, Hf, Wf)
        return self.body(x)

    @torch.no_grad()
    def feature_size(self, height: int, width: int) -> Tuple[int, int]:
        """(Hf, Wf) of F for an input of ``height x width`` (measured once, then cached)."""
        key = (int(height), int(width))
        if key not in self._sizes:
            was_training = self.training
            self.eval()
            p = next(self.parameters())
            out = self.body(torch.zeros(1, 3, *key, device=p.device, dtype=p.dtype))
            self.train(was_training)
            self._sizes[key] = tuple(out.shape[-2:])
        return self._sizes[key]

    def load_weights(self, path: str) -> None:
        """Load trunk weights from a local file: a torchreid checkpoint (e.g. the IDE model of
        Sec. 5.1) or a torchvision state dict. Classifier/fc weights are ignored."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"backbone weights '{path}' do not exist")
        sd = compat.state_dict_of(compat.load_checkpoint(path))
        own = self.body.state_dict()
        picked = {}
        for k, v in sd.items():
            for prefix in ("", "backbone.body.", "backbone.", "body."):
                if k.startswith(prefix) and k[len(prefix):] in own:
                    if own[k[len(prefix):]].shape == v.shape:
                        picked[k[len(prefix):]] = v
                    break
        if len(picked) < len(own) * 0.9:
            raise ValueError(
                f"'{path}' does not look like {self.name} weights: only {len(picked)} of "
                f"{len(own)} backbone tensors matched by name and shape")
        self.body.load_state_dict(picked, strict=False)
        print(f"Loaded {len(picked)}/{len(own)} backbone tensors from '{path}'")


BACKBONES = tuple(_RESNETS) + _OSNETS


def build_backbone(name: str = "resnet50", last_stride: int = 1, pretrained: bool = False,
                   weights: str = "") -> TorchreidBackbone:
    """Build a backbone; ``pretrained=True`` fails with an offline message (no downloads)."""
    if pretrained:
        raise RuntimeError(PRETRAINED_OFFLINE_MESSAGE)
    backbone = TorchreidBackbone(name, last_stride=last_stride)
    if weights:
        backbone.load_weights(weights)
    return backbone
