"""The options every engine takes from the config, in one place.

The loss settings are not here: MPN's are :class:`~mpn_plugin.losses.MPNLossConfig`
(``cfg.mpn.loss``), torchreid's engines take theirs (``cfg.loss``) as constructor arguments.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineOptions:
    """Training and test protocol shared by every engine
    (:class:`~mpn_plugin.engine.mixins.EngineMixin`).

    Attributes:
        flip_test (bool): ``test.flip``: features of an image + of its horizontal flip
            (authors' release).
        warmup_epochs (int): ``train.warmup_epochs``: the lr grows linearly from ~0 to its
            scheduled value over these epochs (0 = off).
        amp_train (bool): ``train.amp``: autocast the training forward: bfloat16 on CPU,
            float16 + gradient scaling on CUDA (MPN engine; torchreid's engines use bfloat16).
        amp_test (bool): ``test.amp``: autocast feature extraction; features are returned as
            float32.
        multi_query (str): ``test.multi_query``: ``none``, or ``mean`` / ``max`` pooling of the
            gt_bbox/ features of each query's identity and camera (Market-1501 multi-query,
            :mod:`mpn_plugin.evaluation.multi_query`).
        divergence_factor (float): ``train.divergence_factor``: every iteration's losses, and
            after every epoch the weights, go through
            :class:`~mpn_plugin.engine.divergence.LossDivergenceCheck` (non-finite or this
            factor above the run's start: the run stops before its next checkpoint).
        checkpoint_freq (int): ``train.checkpoint_freq``: also save a checkpoint after every
            N-th epoch (torchreid saves only after its evaluations and at the end); 0 = off.
        keep_last (int): ``train.keep_last``: keep only the last N epoch checkpoints this run
            wrote (older ones of this run are deleted; others' files are never touched);
            0 = keep all.
        precise_bn_batches (int): ``test.precise_bn_batches``: before each evaluation, MPN's
            engine re-estimates the test-time heads' BN statistics from this many training
            batches through the MT path only
            (:func:`~mpn_plugin.engine.bn_statistics.recompute_main_task_bn_statistics`);
            0 = off.

    Examples::

        >>> options = EngineOptions.from_cfg(cfg)
        >>> engine = MPNEngine(datamanager, model, optimizer, options=options)
    """
    flip_test: bool = False
    warmup_epochs: int = 0
    amp_train: bool = False
    amp_test: bool = False
    multi_query: str = "none"
    divergence_factor: float = 1000.0
    checkpoint_freq: int = 0
    keep_last: int = 0
    precise_bn_batches: int = 0

    @classmethod
    def from_cfg(cls, cfg) -> "EngineOptions":
        """The options of a config (:func:`mpn_plugin.config.get_default_config`)."""
        return cls(flip_test=cfg.test.flip, warmup_epochs=cfg.train.warmup_epochs,
                   amp_train=cfg.train.amp, amp_test=cfg.test.amp,
                   multi_query=cfg.test.multi_query,
                   divergence_factor=cfg.train.divergence_factor,
                   checkpoint_freq=cfg.train.checkpoint_freq, keep_last=cfg.train.keep_last,
                   precise_bn_batches=cfg.test.precise_bn_batches)
