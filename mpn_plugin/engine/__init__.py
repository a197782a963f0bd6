"""Engines and the engine registry used by ``tools/train.py``.

torchreid's ``scripts/main.py`` picks its engine from ``loss.name``; there is no hook for other
engines, so this registry maps ``cfg.engine.name`` to an engine class and :func:`build_engine`
builds it from a config.

Examples::

    >>> from mpn_plugin.engine import ENGINES, build_engine
    >>> sorted(ENGINES)
    ['mpn', 'softmax', 'triplet']
"""
from __future__ import annotations

from typing import Dict, Type

from .baselines import SoftmaxEngine, TripletEngine
from .divergence import LossDivergenceCheck, LossDivergenceError
from .mixins import EngineMixin
from .mpn_engine import MPNEngine, MPNLossConfig

#: engine name -> engine class
ENGINES: Dict[str, Type] = {}


def register_engine(name: str, cls: Type, overwrite: bool = False) -> None:
    """Make ``cls`` available as ``engine.name: <name>`` in configs."""
    if name in ENGINES and ENGINES[name] is not cls and not overwrite:
        raise KeyError(f"engine '{name}' is already registered ({ENGINES[name].__name__})")
    ENGINES[name] = cls


register_engine("mpn", MPNEngine)
register_engine("softmax", SoftmaxEngine)
register_engine("triplet", TripletEngine)


def build_engine(cfg, datamanager, model, optimizer, scheduler=None, use_gpu: bool = False):
    """Build the engine named by ``cfg.engine.name`` with the config's loss settings."""
    name = cfg.engine.name
    if name not in ENGINES:
        raise KeyError(f"engine.name='{name}' is not registered; choose one of {sorted(ENGINES)}")
    cls = ENGINES[name]
    common = dict(scheduler=scheduler, use_gpu=use_gpu)
    if issubclass(cls, MPNEngine):
        engine = cls(datamanager, model, optimizer, loss=MPNLossConfig.from_cfg(cfg),
                     flip_test=cfg.test.flip, warmup_epochs=cfg.train.warmup_epochs,
                     precise_bn_batches=cfg.test.precise_bn_batches, **common)
    elif issubclass(cls, TripletEngine):
        engine = cls(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                     weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                     label_smooth=cfg.loss.softmax.label_smooth, **common)
    else:
        engine = cls(datamanager, model, optimizer,
                     label_smooth=cfg.loss.softmax.label_smooth, **common)
    engine.flip_test = cfg.test.flip
    engine.warmup_epochs = cfg.train.warmup_epochs
    engine.amp_train = cfg.train.amp
    engine.amp_test = cfg.test.amp
    engine.divergence_factor = cfg.train.divergence_factor
    engine.checkpoint_freq = cfg.train.checkpoint_freq
    engine.keep_last = cfg.train.keep_last
    return engine


__all__ = ["ENGINES", "register_engine", "build_engine", "MPNEngine", "MPNLossConfig",
           "SoftmaxEngine", "TripletEngine", "EngineMixin", "LossDivergenceCheck",
           "LossDivergenceError"]
