"""MPN models and their registration in torchreid's model factory.

Factory names (``torchreid...models.build_model(name, num_classes, loss, pretrained)``):

* ``mpn``: MPN with shared channel attention (Table 1, last row)
* ``mpn_o``: MPN° (no CA), the model of the complexity comparison (Table 9)
* ``mpn_baseline``: the PCB-like Baseline of Table 1 (ATs only, uniform division)
* ``mpn_mt_only``: MT Only (Table 1)
* ``mpn_naive_mtl``: Naive MTL (MT + AT, no sharing; train without CF)

Extra hyper-parameters (backbone, K, switches) come from :class:`MPNConfig`: use
:func:`build_mpn` or ``functools.partial`` since ``build_model`` passes only four arguments.
"""
from __future__ import annotations

import functools

from .backbones import BACKBONES, PRETRAINED_OFFLINE_MESSAGE, TorchreidBackbone, build_backbone
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
}


def build_mpn(num_classes: int, loss: str = "triplet", pretrained: bool = False,
              use_gpu: bool = True, variant: str = "mpn", **config) -> MPN:
    """Build an MPN variant; ``config`` overrides :class:`MPNConfig` fields.

    Args:
        num_classes (int): number of training identities.
        loss (str): torchreid loss name (``triplet`` or ``softmax``).
        pretrained (bool): must be False: ImageNet weights need a download (offline here);
            use ``backbone_weights=/local/path`` or ``model.init_weights(path)`` instead.
        use_gpu (bool): unused (the caller moves the model), kept for torchreid's signature.
        variant (str): a key of :data:`VARIANTS`.

    Examples::

        >>> model = build_mpn(751, variant='mpn_o', backbone='resnet18', num_parts=6)
    """
    if pretrained:
        raise RuntimeError(PRETRAINED_OFFLINE_MESSAGE)
    if variant not in VARIANTS:
        raise ValueError(f"unknown MPN variant '{variant}'; choose one of {sorted(VARIANTS)}")
    kwargs = dict(VARIANTS[variant])
    kwargs.update(config)
    return MPN(num_classes, MPNConfig(**kwargs), loss=loss)


def register_models() -> None:
    """Put every MPN variant into torchreid's model factory."""
    from .. import compat
    for name in VARIANTS:
        compat.register_model(name, functools.partial(build_mpn, variant=name), overwrite=True)


__all__ = ["MPN", "MPNConfig", "SharingConfig", "VARIANTS", "build_mpn", "register_models",
           "part_feature_maps", "PRIOR_VARIANTS", "build_backbone", "TorchreidBackbone",
           "BACKBONES", "count_parameters"]
