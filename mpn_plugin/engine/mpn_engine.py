"""The MPN training engine: torchreid's ``Engine`` with MPN's ``forward_backward`` (Eq. 10).

Everything else (training loop, logging, evaluation, ranking, re-ranking, visrank) is
torchreid's. Mixins shared with the baseline engines add safe checkpoints, flip-test feature
extraction and the fast chunked evaluator.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .. import compat
from ..losses import (build_alignment_loss, check_finite, cosine_batch_hard_triplet_loss,
                      part_id_loss, soft_sharing_penalty, triplet_features)
from .bn_statistics import recompute_main_task_bn_statistics
from .mixins import EngineMixin


@dataclass
class MPNLossConfig:
    """Weights and switches of Eq. 10 (and the variants of Tables 3-4, Fig. 10).

    Attributes:
        id_weight (float): weight of L_ID (Eq. 1).
        id_reduction (str): ``sum`` over the K parts (Eq. 1) or ``mean`` (beyond the paper).
        label_smooth (float): label smoothing of the cross-entropy (0 = Eq. 1 as printed).
        triplet_weight (float): weight of L_TRI (Eq. 3).
        triplet_margin (float): alpha.
        triplet_input (str): ``h`` (paper) or ``h_plus_g`` (the sample-wise variant of [10]).
        triplet_start_epoch (int): the triplet term is off before this epoch (a warm-up for
            training from scratch; 0 = always on as in the paper).
        alignment (str): ``class_wise`` (Eq. 8), ``sample_wise`` (Eq. 9), ``batch_wise`` or
            ``none``.
        alignment_weight (float): lambda.
        alignment_start_epoch (int): the alignment term is off before this epoch (0 = always
            on as in the paper, which starts from an IDE model; from ImageNet weights the ID
            losses first need to leave chance, else L_CF is met by features that hardly depend
            on the image: docs/RESULTS.md, real crops).
        soft_sharing_layer (str): ``''``, ``conv1`` or ``conv2`` (Fig. 10).
        soft_sharing_weight (float): weight of the L2 penalty between MT and AT parameters.
    """
    id_weight: float = 1.0
    id_reduction: str = "sum"
    label_smooth: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.2
    triplet_input: str = "h"
    triplet_start_epoch: int = 0
    alignment: str = "class_wise"
    alignment_weight: float = 1.0
    alignment_start_epoch: int = 0
    soft_sharing_layer: str = ""
    soft_sharing_weight: float = 0.0

    @classmethod
    def from_cfg(cls, cfg) -> "MPNLossConfig":
        return cls(**{k: cfg.mpn.loss[k] for k in cls.__dataclass_fields__})


class MPNEngine(EngineMixin, compat.engine.Engine):
    """Trains MPN with L = L_ID + L_TRI + lambda * L_CF (Eq. 10).

    Args:
        datamanager (ImageDataManager): torchreid data manager; train items may carry
            ``prior_mask`` (B, Hf, Wf) and ``prior_roi`` (B, 2) (prior-aware datasets).
        model (MPN): the model.
        optimizer (Optimizer): optimizer.
        scheduler (LRScheduler, optional): lr scheduler (None is fine).
        use_gpu (bool): move batches to CUDA.
        loss (MPNLossConfig): loss weights and switches.
        flip_test (bool): add the features of the horizontally flipped image at test time.
        warmup_epochs (int): linear lr warm-up over the first epochs (0 = off).
        precise_bn_batches (int): before each evaluation, re-estimate the test-time heads' BN
            statistics from this many training batches through the MT path only
            (:func:`~mpn_plugin.engine.bn_statistics.recompute_main_task_bn_statistics`);
            0 = off.

    Examples::

        >>> engine = MPNEngine(datamanager, model, optimizer, scheduler)
        >>> engine.run(save_dir='log/mpn', max_epoch=70, dist_metric='cosine',
        ...            normalize_feature=True)
    """

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu: bool = True,
                 loss: Optional[MPNLossConfig] = None, flip_test: bool = False,
                 warmup_epochs: int = 0, precise_bn_batches: int = 0):
        super().__init__(datamanager, use_gpu)
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.loss_cfg = loss or MPNLossConfig()
        self.alignment_loss = build_alignment_loss(self.loss_cfg.alignment)
        self.flip_test = flip_test
        self.warmup_epochs = warmup_epochs
        self.precise_bn_batches = precise_bn_batches
        if self.loss_cfg.soft_sharing_layer:
            model.soft_sharing_pairs(self.loss_cfg.soft_sharing_layer)  # validate early
        self.epoch = 0

    def test(self, *args, **kwargs):
        """torchreid's test, after re-estimating MT BN statistics if ``precise_bn_batches``."""
        if self.precise_bn_batches > 0:
            recompute_main_task_bn_statistics(
                self.unwrapped_model, self.train_loader, self.precise_bn_batches,
                device="cuda" if self.use_gpu else "cpu")
        return super().test(*args, **kwargs)

    def parse_priors(self, data):
        mask, roi = data.get("prior_mask"), data.get("prior_roi")
        if mask is not None and self.use_gpu:
            mask, roi = mask.cuda(non_blocking=True), roi.cuda(non_blocking=True)
        return mask, roi

    def compute_losses(self, out: Dict[str, torch.Tensor], pids: torch.Tensor
                       ) -> Dict[str, torch.Tensor]:
        """Every term of Eq. 10 that applies to the model's tasks, weighted, by name."""
        c = self.loss_cfg
        terms: Dict[str, torch.Tensor] = {}
        h, g = out["h"], out["g"]
        if c.id_weight > 0:
            if out["mt_logits"] is not None:
                terms["loss_id_mt"] = c.id_weight * part_id_loss(
                    out["mt_logits"], pids, c.label_smooth, c.id_reduction)
            if out["at_logits"] is not None:
                terms["loss_id_at"] = c.id_weight * part_id_loss(
                    out["at_logits"], pids, c.label_smooth, c.id_reduction)
        if c.triplet_weight > 0 and self.epoch >= c.triplet_start_epoch:
            # Eq. 3 on h (MT features); the Baseline has only g (Sec. 5.2.1).
            feats = g if h is None else (triplet_features(h, g, c.triplet_input)
                                         if g is not None else h)
            terms["loss_tri"] = c.triplet_weight * cosine_batch_hard_triplet_loss(
                feats, pids, c.triplet_margin)
        if (c.alignment_weight > 0 and c.alignment != "none" and h is not None and g is not None
                and self.epoch >= c.alignment_start_epoch):
            terms["loss_cf"] = c.alignment_weight * self.alignment_loss(h, g, pids)
        if c.soft_sharing_layer and c.soft_sharing_weight > 0:
            terms["loss_soft"] = soft_sharing_penalty(
                self.unwrapped_model.soft_sharing_pairs(c.soft_sharing_layer), c.soft_sharing_weight)
        return terms

    def forward_backward(self, data):
        imgs, pids = self.parse_data_for_train(data)
        mask, roi = self.parse_priors(data)
        if self.use_gpu:
            imgs, pids = imgs.cuda(non_blocking=True), pids.cuda(non_blocking=True)
        self.apply_warmup()
        with self.autocast(self.amp_train):
            out = self.model(imgs, prior_mask=mask, prior_roi=roi)
        # losses in float32 whatever the forward's precision
        out = {k: (v.float() if v is not None else None) for k, v in out.items()}
        terms = self.compute_losses(out, pids)
        check_finite(terms, context=f"epoch {self.epoch + 1}, batch {self.batch_idx + 1}")
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.backward_step(loss)

        summary = {k: v.item() for k, v in terms.items()}
        logits = out["mt_logits"] if out["mt_logits"] is not None else out["at_logits"]
        summary["acc"] = compat.metrics.accuracy(logits.mean(0), pids)[0].item()
        return summary
