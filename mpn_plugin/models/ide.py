"""The IDE model [56] on this package's backbones: trunk -> global average pooling -> one
linear classifier, trained with softmax (Sec. 5.1: MPN's parameters are initialised from the
IDE model trained on each dataset).

It follows torchreid's model interface (``build_model(name, num_classes, loss, pretrained)``,
eval: features; train: logits, or ``(logits, features)`` with ``loss='triplet'``), so
torchreid's softmax/triplet engines train it, and its checkpoint initialises an MPN backbone
of the same name (``mpn.init_weights``: the trunk is stored as ``backbone.body.*``). It is the
plain softmax comparison on the same trunk as MPN and its Baseline: the three differ only in
their heads and losses.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import build_backbone


class IDE(nn.Module):
    """Backbone + GAP + classifier (torchreid's ResNet head without ``fc``).

    Args:
        num_classes (int): training identities.
        backbone (str): a key of :data:`~mpn_plugin.models.backbones.BACKBONES`.
        loss (str): ``softmax`` or ``triplet`` (training output, as torchreid's models).
        pretrained (bool): ImageNet weights for the backbone.
        last_stride (int): 1 removes the backbone's last down-sampling (as MPN's).

    Examples::

        >>> model = IDE(100, backbone='mobilenetv2').eval()
        >>> model(torch.zeros(2, 3, 128, 64)).shape
        torch.Size([2, 1280])
    """

    def __init__(self, num_classes: int, backbone: str = "mobilenetv2", loss: str = "softmax",
                 pretrained: bool = False, last_stride: int = 1):
        super().__init__()
        if loss not in ("softmax", "triplet"):
            raise ValueError(f"IDE loss must be 'softmax' or 'triplet', got '{loss}'")
        self.loss = loss
        self.backbone = build_backbone(backbone, last_stride, pretrained=pretrained)
        self.feature_dim = self.backbone.out_channels
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)      # torchreid's classifier init
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor, return_featuremaps: bool = False):
        f = self.backbone(x)                                     # (B, C, H, W)
        if return_featuremaps:
            return f
        v = f.mean(dim=(2, 3))                                   # GAP: (B, C)
        if not self.training:
            return v
        y = self.classifier(v)
        return (y, v) if self.loss == "triplet" else y


def build_ide(num_classes: int, loss: str = "softmax", pretrained: bool = True,
              use_gpu: bool = True, backbone: str = "mobilenetv2", **kwargs) -> IDE:
    """torchreid-style constructor of :class:`IDE` (``use_gpu`` unused, kept for the
    factory's signature).

    Examples::

        >>> from mpn_plugin.compat import models
        >>> model = models.build_model('ide_mobilenetv2', num_classes=751, pretrained=True)
    """
    return IDE(num_classes, backbone=backbone, loss=loss, pretrained=pretrained, **kwargs)
