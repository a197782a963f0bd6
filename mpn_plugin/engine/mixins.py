"""Behaviour shared by every engine that ``tools/train.py`` can run (MPN and the torchreid
baselines), so that all models are trained and tested under the same protocol."""
from __future__ import annotations

import inspect
import os
import os.path as osp
from collections import defaultdict
from dataclasses import asdict, fields
from typing import Optional

import numpy as np
import torch

from .. import compat, distributed
from ..evaluation import rank_and_evaluate
from ..evaluation.multi_query import gt_bbox_loader, multi_query_summary, pool_multi_query
from ..models import inference_features
from ..progress import progress_bar as tqdm  # throttled without a terminal
from .divergence import LossDivergenceCheck
from .options import EngineOptions


def amp_dtype(device_type: str, scaled: bool = True) -> torch.dtype:
    """Mixed-precision dtype: bfloat16 on CPU; float16 on CUDA when the caller scales the loss
    (``torch.amp.GradScaler``), else bfloat16 (no scaling needed)."""
    return torch.float16 if device_type == "cuda" and scaled else torch.bfloat16


class EngineMixin(compat.SafeCheckpointMixin):
    """Safe checkpoints (``scheduler=None``, ``weights_only=True`` loading), optional flip test,
    linear lr warm-up, optional mixed precision, the divergence check, periodic checkpoints and
    the chunked evaluator, on top of a torchreid ``Engine`` subclass.

    Args:
        *args, **kwargs: the torchreid engine's own arguments.
        options (EngineOptions, optional): the protocol options (default: ``EngineOptions()``);
            each becomes an attribute of the engine of the same name (``flip_test``,
            ``warmup_epochs``, ``amp_train``, ``amp_test``, ``multi_query``,
            ``divergence_factor``, ``checkpoint_freq``, ``keep_last``, ``precise_bn_batches``;
            see :class:`~mpn_plugin.engine.options.EngineOptions`).

    Examples::

        >>> engine = SoftmaxEngine(datamanager, model, optimizer,
        ...                        options=EngineOptions.from_cfg(cfg))
    """

    last_results: dict = {}

    def __init__(self, *args, options: Optional[EngineOptions] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__.update(asdict(options if options is not None else EngineOptions()))

    def run(self, *args, **kwargs):
        """torchreid's ``run``; its arguments are kept (``save_dir``, ``eval_freq``...) for the
        periodic checkpoints, and the divergence check starts afresh."""
        bound = inspect.signature(compat.engine.Engine.run).bind(self, *args, **kwargs)
        bound.apply_defaults()
        self._run_args = bound.arguments
        self._loss_check = LossDivergenceCheck(self.divergence_factor)
        self._loss_check.weights_start(self.unwrapped_model)
        return super().run(*args, **kwargs)

    def autocast(self, enabled: bool, scaled: bool = True):
        """``torch.autocast`` on the engine's device (a no-op context when not enabled)."""
        device = "cuda" if self.use_gpu else "cpu"
        return torch.autocast(device_type=device, dtype=amp_dtype(device, scaled),
                              enabled=bool(enabled))

    def backward_step(self, loss: torch.Tensor) -> None:
        """``loss.backward(); optimizer.step()``, with gradient scaling for float16 on CUDA."""
        if self.amp_train and self.use_gpu:
            if getattr(self, "_grad_scaler", None) is None:
                self._grad_scaler = torch.amp.GradScaler("cuda")
            self._grad_scaler.scale(loss).backward()
            self._grad_scaler.step(self.optimizer)
            self._grad_scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    @property
    def unwrapped_model(self):
        """The model without its DistributedDataParallel wrapper (for evaluation and for
        the model's own methods)."""
        return distributed.unwrap(self.model)

    @torch.no_grad()
    def extract_features(self, input):
        """The test-time features (:func:`mpn_plugin.models.inference_features`, with
        ``test.flip``) under ``test.amp``, in float32."""
        model = self.unwrapped_model          # rank 0 alone: no DDP collectives at test time
        with self.autocast(self.amp_test):
            return inference_features(model, input, self.flip_test).float()

    def train(self, *args, **kwargs):
        """torchreid's epoch, plus: the epoch is passed to a distributed sampler, the
        epoch's mean of every logged loss term goes to ``self.loss_history``, every step's
        losses and the epoch's final weights go through the divergence check."""
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        sums, count = defaultdict(float), [0]
        step = self.forward_backward

        check = self.__dict__.get("_loss_check")
        if check is None:                     # train() called without run(): start here
            check = self._loss_check = LossDivergenceCheck(self.divergence_factor)
            check.weights_start(self.unwrapped_model)

        last_lr = [None]

        def recorded_step(data):
            last_lr[0] = self.optimizer.param_groups[0]["lr"]
            summary = step(data)
            check(summary, context=f"epoch {self.epoch + 1}, batch {self.batch_idx + 1}, "
                                   f"lr {last_lr[0]:.3g}")
            for k, v in summary.items():
                sums[k] += float(v)
            count[0] += 1
            return summary

        self.forward_backward = recorded_step
        try:
            result = super().train(*args, **kwargs)
        finally:
            del self.forward_backward                     # back to the class's method
            if "loss_history" not in self.__dict__:
                self.loss_history = []
            self.loss_history.append({k: v / max(count[0], 1) for k, v in sums.items()})
        # the epoch's last step had no later loss to show a blow-up (one batch per epoch: no
        # step had): its weights are checked before any checkpoint of this epoch is written
        check.check_weights(self.unwrapped_model, context=f"after epoch {self.epoch + 1}"
                            + (f" (last step's lr {last_lr[0]:.3g})" if count[0] else ""))
        self.save_periodic_checkpoint()
        return result

    def save_periodic_checkpoint(self):
        """After epoch ``self.epoch``: a checkpoint every ``checkpoint_freq`` epochs, except
        where torchreid's ``run`` saves anyway (after an evaluation, at the last epoch)."""
        args = self.__dict__.get("_run_args")
        done = self.epoch + 1
        if self.checkpoint_freq <= 0 or not args or done % self.checkpoint_freq:
            return
        evaluated = (args["eval_freq"] > 0 and done >= args["start_eval"]
                     and done % args["eval_freq"] == 0)
        if done == args["max_epoch"] or evaluated:
            return
        self.save_model(self.epoch, None, args["save_dir"])

    def test(self, *args, **kwargs):
        """torchreid's test on rank 0 only (other ranks return 0 and go on)."""
        if not distributed.is_main_process():
            return 0.0
        return super().test(*args, **kwargs)

    def save_model(self, *args, **kwargs):
        """Checkpoints on rank 0 only; then the run's older ones beyond ``keep_last`` go."""
        if not distributed.is_main_process():
            return []
        paths = super().save_model(*args, **kwargs)
        written = self.__dict__.setdefault("_written_checkpoints", [])
        for path in paths:
            if path in written:
                written.remove(path)
            written.append(path)
            if self.keep_last > 0:
                same_folder = [p for p in written if osp.dirname(p) == osp.dirname(path)]
                for old in same_folder[:-self.keep_last]:
                    written.remove(old)
                    if osp.isfile(old):
                        os.remove(old)
                        print(f'Removed "{old}" (train.keep_last {self.keep_last})')
        return paths

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

    @torch.no_grad()
    def _extract(self, loader, desc):
        feats, pids, camids = [], [], []
        for data in tqdm(loader, desc=desc, leave=False, disable=None):
            imgs, p, c = self.parse_data_for_eval(data)
            if self.use_gpu:
                imgs = imgs.cuda()
            feats.append(self.extract_features(imgs).float().cpu())
            pids.append(p.numpy())
            camids.append(c.numpy())
        return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)

    def _evaluate(self, dataset_name="", query_loader=None, gallery_loader=None,
                  dist_metric="euclidean", normalize_feature=False, visrank=False,
                  visrank_topk=10, save_dir="", use_metric_cuhk03=False, ranks=(1, 5, 10, 20),
                  rerank=False):
        """torchreid's evaluation protocol with the vectorised, chunked evaluator of
        :func:`mpn_plugin.evaluation.rank_and_evaluate` (identical CMC/mAP; bounded memory; no
        Cython needed). Re-ranking and visrank use torchreid's own functions on the full
        distance matrix.
        With ``multi_query`` (mean / max), each query feature is replaced by the pooled raw
        features of its gt_bbox/ images (same extraction), before normalisation."""
        qf, q_pids, q_camids = self._extract(query_loader, "query")
        gf, g_pids, g_camids = self._extract(gallery_loader, "gallery")
        print(f"Extracted query {tuple(qf.shape)} and gallery {tuple(gf.shape)} features")
        if self.multi_query != "none":
            mf, m_pids, m_camids = self._extract(
                gt_bbox_loader(query_loader, self.multi_query, dataset_name), "gt_bbox")
            print(f"Multi-query ({self.multi_query} pooling): "
                  f"{multi_query_summary(q_pids, q_camids, m_pids, m_camids)}")
            qf = pool_multi_query(qf, q_pids, q_camids, mf, m_pids, m_camids, self.multi_query)
        if rerank:
            print("Applying person re-ranking ...")
        cmc, mAP, distmat = rank_and_evaluate(
            qf, gf, q_pids, g_pids, q_camids, g_camids, dist_metric, max(max(ranks), 50),
            normalize=normalize_feature, use_metric_cuhk03=use_metric_cuhk03, rerank=rerank,
            return_distmat=visrank)
        if visrank:
            compat.utils.visualize_ranked_results(
                distmat, self.datamanager.fetch_test_loaders(dataset_name),
                self.datamanager.data_type, width=self.datamanager.width,
                height=self.datamanager.height,
                save_dir=os.path.join(save_dir, "visrank_" + dataset_name), topk=visrank_topk)
        print("** Results **")
        print(f"mAP: {mAP:.1%}")
        print("CMC curve")
        for r in ranks:
            print(f"Rank-{r:<3}: {cmc[r - 1]:.1%}")
        if "last_results" not in self.__dict__:
            self.last_results = {}
        n_ids = len(set(q_pids.tolist()))
        self.last_results[dataset_name] = {
            "rank1": float(cmc[0]), "mAP": float(mAP), "num_query_ids": n_ids,
            "chance_rank1": 1.0 / max(n_ids, 1), "epoch": int(getattr(self, "epoch", 0)) + 1}
        if self.multi_query != "none":
            self.last_results[dataset_name]["multi_query"] = self.multi_query
        return cmc[0], mAP


# engines made without ``__init__`` (e.g. ``__new__`` in tests) read EngineOptions' defaults
for _option in fields(EngineOptions):
    setattr(EngineMixin, _option.name, _option.default)
del _option
