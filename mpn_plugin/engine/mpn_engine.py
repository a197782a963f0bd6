"""The MPN training engine: torchreid's ``Engine`` with MPN's ``forward_backward`` (Eq. 10).

Everything else (training loop, logging, evaluation, ranking, re-ranking, visrank) is
torchreid's. Mixins shared with the baseline engines add safe checkpoints, flip-test feature
extraction and the fast chunked evaluator.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from .. import compat
from ..losses import MPNLossConfig, build_alignment_loss, check_finite, mpn_loss_terms
from .bn_statistics import recompute_main_task_bn_statistics
from .mixins import EngineMixin
from .options import EngineOptions


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
        options (EngineOptions, optional): the protocol options (flip test, warm-up, mixed
            precision, ``precise_bn_batches``: before each evaluation, re-estimate the
            test-time heads' BN statistics from this many training batches through the MT
            path only, :func:`~mpn_plugin.engine.bn_statistics.recompute_main_task_bn_statistics`).

    Examples::

        >>> engine = MPNEngine(datamanager, model, optimizer, scheduler)
        >>> engine.run(save_dir='log/mpn', max_epoch=70, dist_metric='cosine',
        ...            normalize_feature=True)
    """

    def __init__(self, datamanager, model, optimizer, scheduler=None, use_gpu: bool = True,
                 loss: Optional[MPNLossConfig] = None, options: Optional[EngineOptions] = None):
        super().__init__(datamanager, use_gpu, options=options)
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.register_model("model", model, optimizer, scheduler)
        self.loss_cfg = loss or MPNLossConfig()
        build_alignment_loss(self.loss_cfg.alignment)          # an unknown name fails here
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
        """Every term of Eq. 10 that applies to the model's tasks, weighted, by name
        (:func:`~mpn_plugin.losses.mpn_loss_terms` at the current epoch)."""
        c = self.loss_cfg
        pairs = None
        if c.soft_sharing_layer and c.soft_sharing_weight > 0:
            pairs = self.unwrapped_model.soft_sharing_pairs(c.soft_sharing_layer)
        return mpn_loss_terms(out, pids, c, self.epoch, pairs)

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
