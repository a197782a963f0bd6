"""Behaviour shared by every engine that ``tools/train.py`` can run (MPN and the torchreid
baselines), so that all models are trained and tested under the same protocol."""
from __future__ import annotations

import torch

from .. import compat


class EngineMixin(compat.SafeCheckpointMixin):
    """Safe checkpoints (``scheduler=None``, ``weights_only=True`` loading), optional flip test
    and linear lr warm-up, on top of a torchreid ``Engine`` subclass.

    Attributes read (set by the engine's ``__init__`` or :func:`mpn_plugin.engine.build_engine`):
        flip_test (bool): features of an image + of its horizontal flip (authors' release).
        warmup_epochs (int): lr grows linearly from ~0 to its scheduled value over these epochs.
    """

    flip_test = False
    warmup_epochs = 0
    last_results: dict = {}

    @torch.no_grad()
    def extract_features(self, input):
        feats = self.model(input)
        if self.flip_test:
            feats = feats + self.model(torch.flip(input, dims=[3]))
        return feats

    def apply_warmup(self):
        """Called once per iteration before the optimiser step."""
        if self.warmup_epochs <= 0 or self.epoch >= self.warmup_epochs:
            return
        optim = self.optimizer
        if not hasattr(self, "_warmup_base_lrs"):
            self._warmup_base_lrs = [g["lr"] for g in optim.param_groups]
        done = self.epoch * self.num_batches + self.batch_idx + 1
        scale = done / float(self.warmup_epochs * self.num_batches)
        for group, base in zip(optim.param_groups, self._warmup_base_lrs):
            group["lr"] = base * scale

    def _evaluate(self, dataset_name="", query_loader=None, gallery_loader=None, **kwargs):
        """torchreid's evaluation, recording Rank-1, mAP and chance level per dataset."""
        rank1, mAP = super()._evaluate(dataset_name=dataset_name, query_loader=query_loader,
                                       gallery_loader=gallery_loader, **kwargs)
        q_pids = {int(p) for _, p, _, _ in query_loader.dataset.query} if hasattr(
            query_loader.dataset, "query") else set()
        if "last_results" not in self.__dict__:
            self.last_results = {}
        self.last_results[dataset_name] = {
            "rank1": float(rank1), "mAP": float(mAP), "num_query_ids": len(q_pids),
            "chance_rank1": 1.0 / max(len(q_pids), 1), "epoch": int(getattr(self, "epoch", 0)) + 1}
        return rank1, mAP
