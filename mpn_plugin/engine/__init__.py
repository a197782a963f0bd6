"""Engines, their options and the engine registry used by ``tools/train.py``.

torchreid's ``scripts/main.py`` picks its engine from ``loss.name``; there is no hook for other
engines, so this registry maps ``cfg.engine.name`` to an engine class, and
:func:`mpn_plugin.build.build_engine` builds it from a config (with
:meth:`EngineOptions.from_cfg`).

Examples::

    >>> from mpn_plugin.engine import ENGINES
    >>> sorted(ENGINES)
    ['mpn', 'softmax', 'triplet']
"""
from __future__ import annotations

from typing import Dict, Type

from ..losses import MPNLossConfig
from .baselines import SoftmaxEngine, TripletEngine
from .divergence import LossDivergenceCheck, LossDivergenceError
from .mixins import EngineMixin
from .mpn_engine import MPNEngine
from .options import EngineOptions

#: engine name -> engine class
ENGINES: Dict[str, Type] = {}


def register_engine(name: str, cls: Type, overwrite: bool = False) -> None:
    """Make ``cls`` available as ``engine.name: <name>`` in configs. ``cls`` is an
    :class:`EngineMixin` subclass: :func:`mpn_plugin.build.build_engine` passes it torchreid's
    engine arguments and ``options=`` (:class:`EngineOptions`)."""
    if name in ENGINES and ENGINES[name] is not cls and not overwrite:
        raise KeyError(f"engine '{name}' is already registered ({ENGINES[name].__name__})")
    ENGINES[name] = cls


register_engine("mpn", MPNEngine)
register_engine("softmax", SoftmaxEngine)
register_engine("triplet", TripletEngine)


__all__ = ["ENGINES", "register_engine", "EngineOptions", "MPNEngine", "MPNLossConfig",
           "SoftmaxEngine", "TripletEngine", "EngineMixin", "LossDivergenceCheck",
           "LossDivergenceError"]
