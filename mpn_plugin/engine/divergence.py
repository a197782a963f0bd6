"""Stop a diverging run: a non-finite loss, or a loss orders of magnitude above its start.

MPN's step already raises on a NaN/inf loss term before the backward pass
(:func:`mpn_plugin.losses.check_finite`). With a learning rate far too high (``train.lr 1e6``)
the loss can instead grow to 1e10 while staying finite, and the run then ends normally and
writes a checkpoint of useless weights. :class:`LossDivergenceCheck` looks at every iteration's
logged loss terms (every engine, torchreid's included): non-finite terms raise
``FloatingPointError`` (through ``check_finite``), and a total above ``factor`` times
``max(total of the run's first iteration, 1)`` raises :class:`LossDivergenceError`, naming the
largest term. Raising ends ``Engine.run`` before its next checkpoint, so the checkpoints
already in ``save_dir`` are kept.

A loss is only seen before its step, so the last step of a run (with one batch per epoch, the
only step) would go unchecked: after every epoch, before any checkpoint of it is written, the
weights are checked as well (:meth:`LossDivergenceCheck.check_weights`): non-finite weights
raise ``FloatingPointError``, and an L2 norm of all weights above ``factor`` times
``max(their norm at the run's start, 1)`` raises :class:`LossDivergenceError`, naming the
parameter with the largest value.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from ..losses import check_finite


class LossDivergenceError(FloatingPointError):
    """The training loss grew by orders of magnitude (``train.divergence_factor``)."""


class LossDivergenceCheck:
    """Compares each iteration's total loss with the first iteration of the run.

    Args:
        factor (float): ``train.divergence_factor``: the total may reach ``factor`` times
            ``max(first total, floor)``; 0 = check non-finite terms only.
        floor (float): lower bound of the reference (a loss that starts near 0, e.g. a
            triplet term whose margin is met, is not compared with ~0).

    Examples::

        >>> check = LossDivergenceCheck(factor=1000)
        >>> check({'loss_id_mt': 2.8, 'loss_tri': 0.2})     # the reference: 3.0
        >>> check({'loss_id_mt': 1.2e10, 'loss_tri': 0.3})
        Traceback (most recent call last):
        LossDivergenceError: training diverged at ...: total loss 1.2e+10 ...
    """

    def __init__(self, factor: float = 1000.0, floor: float = 1.0):
        self.factor = float(factor)
        self.floor = float(floor)
        self.start: Optional[Dict[str, float]] = None
        self.start_weight_norm: Optional[float] = None

    @staticmethod
    def _weights(model: torch.nn.Module):
        return [(name, p.detach()) for name, p in model.named_parameters()
                if p.dtype.is_floating_point]

    @torch.no_grad()
    def weights_start(self, model: torch.nn.Module) -> None:
        """Record the L2 norm of ``model``'s weights (call before the run's first step)."""
        weights = self._weights(model)
        self.start_weight_norm = self._norm(weights)

    @staticmethod
    def _norm(weights) -> float:
        """L2 norm of all weights, in float64 (a blown-up float32 weight squared overflows)."""
        if not weights:
            return 0.0
        return float(torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(w, dtype=torch.float64) for _, w in weights])))

    @torch.no_grad()
    def check_weights(self, model: torch.nn.Module, context: str = "") -> None:
        """Raise when ``model``'s weights are non-finite, or when their L2 norm is above
        ``factor`` times ``max(norm at weights_start, floor)`` (``factor`` 0: non-finite only).
        Without a recorded start, only non-finite weights are checked."""
        weights = self._weights(model)
        if not weights:
            return
        where = f" {context}" if context else ""
        bad = [name for name, w in weights if not bool(torch.isfinite(w).all())]
        if bad:
            raise FloatingPointError(
                f"non-finite weights{where}: {', '.join(bad[:5])}"
                f"{' and %d more' % (len(bad) - 5) if len(bad) > 5 else ''}. The run stopped "
                "before writing a checkpoint of them. Lower train.lr or use a warm-up "
                "(train.warmup_epochs).")
        if self.factor <= 0 or self.start_weight_norm is None:
            return
        total = self._norm(weights)
        reference = max(self.start_weight_norm, self.floor)
        if total <= self.factor * reference:
            return
        peaks = [float(w.abs().max()) if w.numel() else 0.0 for _, w in weights]
        worst = max(range(len(weights)), key=peaks.__getitem__)
        raise LossDivergenceError(
            f"training diverged{where}: the weights' L2 norm is {total:.3g}, more than "
            f"train.divergence_factor={self.factor:g} x its start {self.start_weight_norm:.3g} "
            f"(floor {self.floor:g}); largest |w| {peaks[worst]:.3g} in {weights[worst][0]}. "
            "The run stopped before writing a checkpoint of these weights. Lower train.lr, use "
            "a warm-up (train.warmup_epochs), or raise train.divergence_factor (0 = stop on "
            "non-finite values only) if such growth is expected.")

    @staticmethod
    def loss_terms(summary: Dict[str, float]) -> Dict[str, float]:
        """The loss entries (``loss*``) of an engine's per-iteration summary (not ``acc``)."""
        return {k: float(v) for k, v in summary.items() if k.startswith("loss")}

    def __call__(self, summary: Dict[str, float], context: str = "") -> None:
        terms = self.loss_terms(summary)
        if not terms:
            return
        check_finite({k: torch.tensor(v) for k, v in terms.items()}, context)
        total = sum(terms.values())
        if self.start is None:
            self.start = terms
            return
        reference = max(sum(self.start.values()), self.floor)
        if self.factor <= 0 or total <= self.factor * reference:
            return
        worst = max(terms, key=terms.get)
        values = ", ".join(f"{k} {v:.3g} (start {self.start.get(k, 0.0):.3g})"
                           for k, v in terms.items())
        raise LossDivergenceError(
            f"training diverged{' at ' + context if context else ''}: total loss {total:.3g} is "
            f"more than train.divergence_factor={self.factor:g} x its start "
            f"{sum(self.start.values()):.3g} (floor {self.floor:g}); largest term {worst} = "
            f"{terms[worst]:.3g}. Terms: {values}. The run stopped before writing another "
            "checkpoint. Lower train.lr, use a warm-up (train.warmup_epochs), or raise "
            "train.divergence_factor (0 = stop on non-finite losses only) if such growth is "
            "expected.")


__all__ = ["LossDivergenceCheck", "LossDivergenceError"]
