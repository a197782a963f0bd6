"""Vectorised CMC / mAP with bounded memory (drop-in for torchreid's ``evaluate_rank``).

The PyPI torchreid ships no Cython ranking, so its evaluation loops over queries in Python; it
also fails when a query has fewer valid gallery images than ``max_rank``. Here each chunk of
queries is ranked at once with numpy: for the Market-1501 metric, gallery images with the
query's identity *and* camera are removed, queries without any valid match are skipped, CMC is
cut at ``max_rank`` (padded with its last value when fewer images remain) and AP is the mean
of the precision at each correct match, as torchreid computes them.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as Fn


def _rank_chunk(indices: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int):
    """CMC rows (n, max_rank), AP (n,) and validity (n,) for ranked gallery ``indices``."""
    g_pid_r, g_cam_r = g_pids[indices], g_camids[indices]               # (n, G)
    matches = g_pid_r == q_pids[:, None]
    keep = ~(matches & (g_cam_r == q_camids[:, None]))
    hit = matches & keep
    num_hits = hit.sum(1)
    valid = num_hits > 0
    pos = np.cumsum(keep, 1) - 1                                        # rank among kept
    first = np.where(hit, pos, np.iinfo(np.int64).max).min(1)           # first correct match
    cmc = (np.arange(max_rank)[None, :] >= first[:, None]).astype(np.float32)
    precision = np.cumsum(hit, 1) / np.maximum(pos + 1.0, 1.0)   # only read where hit
    ap = np.where(valid, (precision * hit).sum(1) / np.maximum(num_hits, 1), 0.0)
    return cmc, ap, valid


def evaluate_rank(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  use_metric_cuhk03: bool = False, chunk_size: int = 256) -> Tuple[np.ndarray, float]:
    """CMC (max_rank,) and mAP like torchreid's ``metrics.evaluate_rank``.

    Examples::

        >>> cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids)
    """
    if use_metric_cuhk03:
        from .. import compat
        return compat.metrics.evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids,
                                            max_rank=max_rank, use_metric_cuhk03=True,
                                            use_cython=False)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    acc = _Accumulator(max_rank)
    for s in range(0, len(q_pids), chunk_size):
        e = s + chunk_size
        indices = np.argsort(distmat[s:e], axis=1)
        acc.add(*_rank_chunk(indices, q_pids[s:e], g_pids, q_camids[s:e], g_camids, max_rank))
    return acc.result()


class _Accumulator:
    def __init__(self, max_rank):
        self.cmc_sum, self.ap_sum, self.n = np.zeros(max_rank, np.float64), 0.0, 0

    def add(self, cmc, ap, valid):
        self.cmc_sum += cmc[valid].sum(0)
        self.ap_sum += float(ap[valid].sum())
        self.n += int(valid.sum())

    def result(self):
        if self.n == 0:
            raise ValueError("no query identity appears in the gallery (from another camera)")
        return (self.cmc_sum / self.n).astype(np.float32), self.ap_sum / self.n


def distance_matrix(qf: torch.Tensor, gf: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """As torchreid's ``compute_distance_matrix``: squared euclidean or 1 - cosine."""
    if metric == "euclidean":
        return (qf.pow(2).sum(1, keepdim=True) + gf.pow(2).sum(1)[None] - 2 * qf @ gf.t())
    if metric == "cosine":
        return 1 - Fn.normalize(qf, dim=1) @ Fn.normalize(gf, dim=1).t()
    raise ValueError(f"unknown distance metric '{metric}': use 'euclidean' or 'cosine'")


def evaluate_features(qf: torch.Tensor, gf: torch.Tensor, q_pids, g_pids, q_camids, g_camids,
                      metric: str = "cosine", max_rank: int = 50, chunk_size: int = 512,
                      use_metric_cuhk03: bool = False) -> Tuple[np.ndarray, float]:
    """Distances and ranking chunk by chunk of queries: memory ~ chunk_size x G, never the
    full Q x G matrix (MSMT17-sized problems fit)."""
    if use_metric_cuhk03:
        dist = distance_matrix(qf, gf, metric).cpu().numpy()
        return evaluate_rank(dist, q_pids, g_pids, q_camids, g_camids, max_rank, True)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    acc = _Accumulator(max_rank)
    for s in range(0, qf.shape[0], chunk_size):
        e = s + chunk_size
        d = distance_matrix(qf[s:e], gf, metric)
        indices = torch.argsort(d, dim=1).cpu().numpy()
        acc.add(*_rank_chunk(indices, q_pids[s:e], g_pids, q_camids[s:e], g_camids, max_rank))
    return acc.result()
