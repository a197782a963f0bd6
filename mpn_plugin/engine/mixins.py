"""Behaviour shared by every engine that ``tools/train.py`` can run (MPN and the torchreid
baselines), so that all models are trained and tested under the same protocol."""
from __future__ import annotations

import inspect
import os
import os.path as osp
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import progress_bar as tqdm  # throttled without a terminal
from .. import compat
from .. import distributed
from ..evaluation import distance_matrix, evaluate_features, evaluate_rank
from ..evaluation.multi_query import gt_bbox_loader, multi_query_summary, pool_multi_query
from .divergence import LossDivergenceCheck


def amp_dtype(device_type: str, scaled: bool = True) -> torch.dtype:
    """Mixed-precision dtype: bfloat16 on CPU; float16 on CUDA when the caller scales the loss
    (``torch.amp.GradScaler``), else bfloat16 (no scaling needed)."""
    return torch.float16 if device_type == "cuda" and scaled else torch.bfloat16


class EngineMixin(compat.SafeCheckpointMixin):
    """Safe checkpoints (``scheduler=None``, ``weights_only=True`` loading), optional flip test,
    linear lr warm-up and optional mixed precision, on top of a torchreid ``Engine`` subclass.

    Attributes read (set by the engine's ``__init__`` or :func:`mpn_plugin.engine.build_engine`):
        flip_test (bool): features of an image + of its horizontal flip (authors' release).
        warmup_epochs (int): lr grows linearly from ~0 to its scheduled value over these epochs.
        amp_train (bool): autocast the training forward (``train.amp``): bfloat16 on CPU,
            float16 + gradient scaling on CUDA (MPN engine; torchreid's engines use bfloat16).
        amp_test (bool): autocast feature extraction (``test.amp``); features are returned
            as float32.
        multi_query (str): ``test.multi_query``: ``none``, or ``mean`` / ``max`` pooling of the
            gt_bbox/ features of each query's identity and camera (Market-1501 multi-query,
            :mod:`mpn_plugin.evaluation.multi_query`).
        divergence_factor (float): ``train.divergence_factor``: every iteration's losses, and
            after every epoch the weights, go through
            :class:`~mpn_plugin.engine.divergence.LossDivergenceCheck` (non-finite or this factor
            above the run's start: the run stops before its next checkpoint).
        checkpoint_freq (int): ``train.checkpoint_freq``: also save a checkpoint after every
            N-th epoch (torchreid saves only after its evaluations and at the end); 0 = off.
        keep_last (int): ``train.keep_last``: keep only the last N epoch checkpoints this run
            wrote (older ones of this run are deleted; others' files are never touched);
            0 = keep all.
    """

    flip_test = False
    warmup_epochs = 0
    amp_train = False
    amp_test = False
    multi_query = "none"
    divergence_factor = 1000.0
    checkpoint_freq = 0
    keep_last = 0
    last_results: dict = {}

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
        model = self.unwrapped_model          # rank 0 alone: no DDP collectives at test time
        with self.autocast(self.amp_test):
            feats = model(input).float()
            if self.flip_test:
                feats = feats + model(torch.flip(input, dims=[3])).float()
        return feats

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
        :mod:`mpn_plugin.evaluation` (identical CMC/mAP; bounded memory; no Cython needed).
        Re-ranking and visrank use torchreid's own functions on the full distance matrix.
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
        if normalize_feature:
            qf, gf = F.normalize(qf, dim=1), F.normalize(gf, dim=1)
        max_rank = max(max(ranks), 50)
        if rerank or visrank:
            distmat = distance_matrix(qf, gf, dist_metric).numpy()
            if rerank:
                print("Applying person re-ranking ...")
                distmat = compat.utils.re_ranking(
                    distmat, distance_matrix(qf, qf, dist_metric).numpy(),
                    distance_matrix(gf, gf, dist_metric).numpy())
            cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank,
                                     use_metric_cuhk03)
            if visrank:
                compat.utils.visualize_ranked_results(
                    distmat, self.datamanager.fetch_test_loaders(dataset_name),
                    self.datamanager.data_type, width=self.datamanager.width,
                    height=self.datamanager.height,
                    save_dir=os.path.join(save_dir, "visrank_" + dataset_name), topk=visrank_topk)
        else:
            cmc, mAP = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, dist_metric,
                                         max_rank, use_metric_cuhk03=use_metric_cuhk03)
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
