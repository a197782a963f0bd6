"""Vectorised, chunked CMC / mAP: a drop-in for torchreid's ``metrics.evaluate_rank``.

The PyPI torchreid ships no compiled ranking, so its ``evaluate_rank`` loops over queries in
Python (47 s on a Market-1501-sized problem) and needs the full distance matrix, its int64
``argsort`` and the gathered identities in memory together (~20 GB for MSMT17). Here queries
are ranked a chunk at a time:

1. distances of ``n`` queries to the whole gallery (n, G) (torch, on the features' device);
2. ``np.argsort`` of the chunk, row by row the very call torchreid makes, so the ranking and
   its tie order are identical (numpy's SIMD sort is also ~6x faster than ``torch.sort`` on CPU);
3. only the gallery images of the query's identity are kept as a sparse list
   ``(row, rank)``; those from the query's camera are "junk" (removed, Market-1501 protocol),
   the others are the correct matches. The rank of a match among the kept images is its rank
   minus the junk before it, so CMC and AP need no further (n, G) work.

Protocol (as torchreid computes it; the paper reports Rank-1 and mAP, Sec. 5):
    * CMC(k) = fraction of valid queries whose first correct match is within the top k kept
      images; a query without any correct match is skipped.
    * AP = mean over the correct matches of the precision at their rank,
      ``AP = 1/|H| sum_j (j / r_j)`` with ``r_j`` the (1-based) kept rank of the j-th match.
    * cuhk03 metric (single-gallery-shot): per valid query, ``num_repeats`` = 10 times one kept
      gallery image per identity is drawn at random and CMC is measured on that sub-gallery;
      AP is the Market AP. The draws use numpy's global random state in the very order of
      torchreid's ``np.random.choice`` calls, so results are identical for the same seed.

Differences from torchreid, on purpose: ``cmc`` always has ``max_rank`` entries (torchreid
returns ``min(max_rank, G)`` entries, and fails when a query keeps fewer than ``max_rank``
gallery images; past the end of the kept list every valid query has found its match, so the
extra entries are 1.0, and the first ``min(max_rank, G)`` entries are torchreid's); an empty
evaluation raises ``ValueError`` instead of ``AssertionError``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import distance as _distance
from .distance import compute_distance_matrix

__all__ = ["evaluate_rank", "evaluate_features", "rank_and_evaluate", "auto_chunk_size"]

NUM_REPEATS_CUHK03 = 10  # torchreid's eval_cuhk03
CHUNK_ELEMENTS = 1 << 24  # default budget: ~16.8 M distances per chunk, ~17 bytes each (0.3 GB)
CHUNK_ALIGN = 64  # default chunks: multiples of 64 rows (observed: same sgemm bits as full matrix)


def auto_chunk_size(num_gallery: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Queries per chunk so that a chunk holds at most ``budget`` distances, in multiples of
    ``CHUNK_ALIGN`` rows (at least one multiple).

    Examples::

        >>> auto_chunk_size(15913), auto_chunk_size(82161)
        (1024, 192)
    """
    return max(CHUNK_ALIGN, budget // max(num_gallery, 1) // CHUNK_ALIGN * CHUNK_ALIGN)


def _ids(q_pids, g_pids, q_camids, g_camids, num_q=None, num_g=None):
    """Identities as compact codes (gallery ids -> 0..U-1, query ids absent from the gallery ->
    -1) and cameras as arrays, with clear errors on length mismatches."""
    arrays = [np.asarray(a).reshape(-1) for a in (q_pids, g_pids, q_camids, g_camids)]
    q_pids, g_pids, q_camids, g_camids = arrays
    if len(q_pids) != len(q_camids) or (num_q is not None and len(q_pids) != num_q):
        raise ValueError(f"query: {len(q_pids)} pids and {len(q_camids)} camids for {num_q} "
                         "query rows; pass one pid and one camid per query image")
    if len(g_pids) != len(g_camids) or (num_g is not None and len(g_pids) != num_g):
        raise ValueError(f"gallery: {len(g_pids)} pids and {len(g_camids)} camids for {num_g} "
                         "gallery columns; pass one pid and one camid per gallery image")
    if len(g_pids) == 0 or len(q_pids) == 0:
        raise ValueError(f"evaluation needs query and gallery images, got {len(q_pids)} "
                         f"queries and {len(g_pids)} gallery images")
    ids, g_codes = np.unique(g_pids, return_inverse=True)
    pos = np.minimum(np.searchsorted(ids, q_pids), len(ids) - 1)
    q_codes = np.where(ids[pos] == q_pids, pos, -1).astype(np.int32)
    # int32 codes: the (n, G) gather of gallery codes per chunk costs 4 bytes, not 8
    return q_codes, g_codes.reshape(-1).astype(np.int32), q_camids, g_camids, len(ids)


def _count_before(flags: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """For sparse entries sorted by row: how many entries of the same row before each one have
    ``flags`` set."""
    before = np.cumsum(flags) - flags                                    # global, exclusive
    first = np.searchsorted(rows, np.arange(num_rows))                   # first entry of a row
    return before - np.append(before, 0)[first][rows]


class _Evaluator:
    """Accumulates CMC counts and APs over chunks of ranked queries (in query order)."""

    def __init__(self, q_codes, g_codes, q_camids, g_camids, num_ids, max_rank, cuhk03):
        self.q_codes, self.g_codes = q_codes, g_codes
        self.q_camids, self.g_camids = q_camids, g_camids
        self.num_ids, self.max_rank, self.cuhk03 = num_ids, max_rank, cuhk03
        self.cmc_count = np.zeros(max_rank, np.int64)   # market: valid queries found by rank k
        self.cmc_sum = np.zeros(max_rank, np.float32)   # cuhk03: float32 running sum (torchreid)
        self.aps, self.num_valid = [], 0

    def add(self, order: np.ndarray, start: int):
        """``order`` (n, G): gallery indices by increasing distance for queries start..start+n."""
        n = order.shape[0]
        q_codes = self.q_codes[start:start + n]
        q_cams = self.q_camids[start:start + n]
        # sparse list of gallery images with the query's identity, in rank order per row
        rows, ranks = np.nonzero(self.g_codes[order] == q_codes[:, None])   # (m,), (m,)
        junk = self.g_camids[order[rows, ranks]] == q_cams[rows]           # same id, same camera
        kept_rank = ranks - _count_before(junk, rows, n)                    # 0-based among kept
        hit = ~junk
        h_rows, h_rank = rows[hit], kept_rank[hit]                           # correct matches
        num_hits = np.bincount(h_rows, minlength=n)                          # (n,)
        first = np.searchsorted(h_rows, np.arange(n))                        # first match per row
        j = np.arange(len(h_rows)) - first[h_rows]                           # 0-based match index
        ap_sum = np.bincount(h_rows, weights=(j + 1.0) / (h_rank + 1.0), minlength=n)
        valid = num_hits > 0
        if not valid.any():
            return
        self.aps.append(ap_sum[valid] / num_hits[valid])
        self.num_valid += int(valid.sum())
        if self.cuhk03:
            cmc = self._cuhk03_cmc(order[valid], q_codes[valid], rows, ranks, junk, valid)
            self.cmc_sum = np.concatenate([self.cmc_sum[None], cmc]).sum(0)  # sequential, f32
        else:
            first_rank = np.minimum(h_rank[first[valid]], self.max_rank)
            self.cmc_count += np.cumsum(np.bincount(first_rank, minlength=self.max_rank + 1))[:-1]

    def _cuhk03_cmc(self, order, q_codes, rows, ranks, junk, valid):
        """Single-gallery-shot CMC (nv, max_rank) float32 of the valid rows, with torchreid's
        random draws: per query, per repeat, per identity in order of first appearance in the
        kept ranking, ``np.random.choice`` over that identity's kept positions."""
        nv, num_g = order.shape
        U = self.num_ids
        row_of = np.cumsum(valid) - 1                                         # row -> valid row
        junk_mask = np.zeros((nv, num_g), bool)
        junk_valid = valid[rows] & junk
        junk_mask[row_of[rows[junk_valid]], ranks[junk_valid]] = True
        small = np.int16 if U < np.iinfo(np.int16).max else np.int32          # radix sort
        codes = np.where(junk_mask, U, self.g_codes[order]).astype(small)     # junk last: U
        kept_pos = np.cumsum(~junk_mask, axis=1) - 1                          # (nv, G)
        grouped = np.argsort(codes, axis=1, kind="stable")                    # by id, then rank
        kp = np.take_along_axis(kept_pos, grouped, 1)                         # (nv, G)
        counts = np.bincount((codes + np.arange(nv)[:, None] * (U + 1)).ravel(),  # int64
                             minlength=nv * (U + 1)).reshape(nv, U + 1)[:, :U]   # (nv, U)
        starts = np.cumsum(counts, 1) - counts                                # (nv, U)
        first_seen = np.take_along_axis(kp, starts, 1)                        # (nv, U)
        dict_order = np.argsort(first_seen, axis=1)                           # ids as torchreid
        sizes = np.take_along_axis(counts, dict_order, 1)                     # (nv, U)
        R = NUM_REPEATS_CUHK03
        draws = np.random.randint(0, np.broadcast_to(sizes[:, None, :], (nv, R, U)))
        at = np.take_along_axis(starts, dict_order, 1)[:, None, :] + draws   # (nv, R, U)
        chosen = np.take_along_axis(kp, at.reshape(nv, R * U), 1).reshape(nv, R, U)
        q_col = np.argmax(dict_order == q_codes[:, None], axis=1)             # query's own id
        q_pos = chosen[np.arange(nv), :, q_col]                               # (nv, R)
        rank = (chosen < q_pos[:, :, None]).sum(2)                            # (nv, R)
        found = (rank[:, :, None] <= np.arange(self.max_rank)).sum(1)         # (nv, max_rank)
        return found.astype(np.float32) / np.float32(R)

    def result(self) -> Tuple[np.ndarray, float]:
        if self.num_valid == 0:
            raise ValueError("evaluation: no query has a correct match in the gallery (same "
                             "identity, other camera); check the query/gallery split, pids and "
                             "camids")
        total = self.cmc_sum if self.cuhk03 else self.cmc_count.astype(np.float32)
        return total / np.float32(self.num_valid), float(np.mean(np.concatenate(self.aps)))


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                  use_metric_cuhk03: bool = False,
                  chunk_size: Optional[int] = None) -> Tuple[np.ndarray, float]:
    """CMC and mAP of a distance matrix, identical to torchreid's ``metrics.evaluate_rank``.

    Args:
        distmat (numpy.ndarray or torch.Tensor): (Q, G) distances (smaller = more similar).
        q_pids, g_pids (array-like): (Q,), (G,) person identities.
        q_camids, g_camids (array-like): (Q,), (G,) camera ids.
        max_rank (int): CMC length. Default 50.
        use_metric_cuhk03 (bool): single-gallery-shot protocol (CUHK03 classic split); uses
            numpy's global random state exactly as torchreid does.
        chunk_size (int, optional): queries ranked at once (default: :func:`auto_chunk_size`).

    Returns:
        tuple: ``cmc`` (max_rank,) float32 and ``mAP`` (float).

    Examples::

        >>> d = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], np.float32)
        >>> cmc, mAP = evaluate_rank(d, [0, 1], [0, 1, 2], [0, 0], [1, 1, 1], max_rank=3)
        >>> cmc.tolist(), mAP
        ([0.5, 1.0, 1.0], 0.75)
    """
    if isinstance(distmat, torch.Tensor):
        distmat = distmat.detach().cpu().numpy()
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got {distmat.shape}")
    num_q, num_g = distmat.shape
    ev = _Evaluator(*_ids(q_pids, g_pids, q_camids, g_camids, num_q, num_g), max_rank,
                    use_metric_cuhk03)
    step = chunk_size or auto_chunk_size(num_g)
    for s in range(0, num_q, step):
        ev.add(np.argsort(distmat[s:s + step], axis=1), s)                  # (n, G) as torchreid
    return ev.result()


def evaluate_features(qf: torch.Tensor, gf: torch.Tensor, q_pids, g_pids, q_camids, g_camids,
                      metric: str = "euclidean", max_rank: int = 50, *, normalize: bool = False,
                      chunk_size: Optional[int] = None, device=None,
                      use_metric_cuhk03: bool = False) -> Tuple[np.ndarray, float]:
    """CMC and mAP straight from features, a chunk of queries at a time.

    Equals ``evaluate_rank(compute_distance_matrix(qf, gf, metric).numpy(), ...)`` (torchreid's
    ``_evaluate``) without the (Q, G) matrix: memory is bounded by ``chunk_size x G`` (distances
    float32, argsort int64, gathered int32 ids, a boolean match mask: ~17 bytes per pair),
    e.g. 0.3 GB per chunk for MSMT17 (11,659 x 82,161; 1.25 GB measured in all, incl. the
    normalised gallery copy for cosine) instead of ~20 GB. Distances are computed on
    ``device`` (default: the features' device, CUDA included); ranking runs on CPU with
    ``np.argsort`` (torchreid's call: same tie order).
    A chunk's distances can differ from the full matrix's in the last bit (see
    :mod:`mpn_plugin.evaluation.distance`), which can only reorder gallery images closer than
    ~1e-7 in distance; with the default chunks (multiples of 64 rows) they were bit-identical
    in every case tried.
    Only CMC@k (no mAP) would need just the top ``k`` + junk of each row (``torch.topk``);
    mAP needs the rank of every correct match, hence the full sort per chunk.

    Args:
        qf (torch.Tensor): (Q, D) query features.
        gf (torch.Tensor): (G, D) gallery features.
        q_pids, g_pids, q_camids, g_camids (array-like): identities and cameras.
        metric (str): "euclidean" (squared, as torchreid) or "cosine".
        max_rank (int): CMC length. Default 50.
        normalize (bool): L2-normalise features first (torchreid's ``test.normalize_feature``).
        chunk_size (int, optional): queries per chunk; default :func:`auto_chunk_size`
            (about 16.8 M distances per chunk: 1,024 queries for Market-1501, 192 for MSMT17).
        device (str or torch.device, optional): where distances are computed.
        use_metric_cuhk03 (bool): single-gallery-shot protocol (see :func:`evaluate_rank`).

    Returns:
        tuple: ``cmc`` (max_rank,) float32 and ``mAP`` (float).

    Examples::

        >>> qf, gf = torch.randn(100, 512), torch.randn(1000, 512)
        >>> cmc, mAP = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids,
        ...                              "cosine", chunk_size=64)
    """
    _distance._check(qf, gf, metric)
    device = torch.device(device) if device is not None else qf.device
    qf, gf = qf.to(device), gf.to(device)
    if normalize:
        qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
    num_q, num_g = qf.size(0), gf.size(0)
    ev = _Evaluator(*_ids(q_pids, g_pids, q_camids, g_camids, num_q, num_g), max_rank,
                    use_metric_cuhk03)
    step = int(chunk_size or auto_chunk_size(num_g))
    with torch.no_grad():
        gallery = _distance.prepare_gallery(gf, metric)
        for s in range(0, num_q, step):
            dist = _distance.chunk_distances(qf[s:s + step], gallery, metric)   # (n, G)
            ev.add(np.argsort(dist.cpu().numpy(), axis=1), s)
            del dist
    return ev.result()


def rank_and_evaluate(qf: torch.Tensor, gf: torch.Tensor, q_pids, g_pids, q_camids, g_camids,
                      metric: str = "euclidean", max_rank: int = 50, *, normalize: bool = False,
                      use_metric_cuhk03: bool = False, rerank: bool = False,
                      return_distmat: bool = False, chunk_size: Optional[int] = None,
                      device=None) -> Tuple[np.ndarray, float, Optional[np.ndarray]]:
    """The distance + ranking step of torchreid's ``Engine._evaluate``.

    Chunked (no (Q, G) matrix, ``distmat`` is None) unless the full matrix is needed: with
    ``rerank`` (torchreid's ``utils.re_ranking`` on query-gallery, query-query and
    gallery-gallery distances) or ``return_distmat`` (e.g. for ``visualize_ranked_results``).

    Returns:
        tuple: ``cmc`` (max_rank,) float32, ``mAP`` (float), ``distmat`` (Q, G) numpy or None.

    Examples::

        >>> cmc, mAP, distmat = rank_and_evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids,
        ...                                       "euclidean", return_distmat=visrank)
    """
    if not (rerank or return_distmat):
        return (*evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric, max_rank,
                                   normalize=normalize, chunk_size=chunk_size, device=device,
                                   use_metric_cuhk03=use_metric_cuhk03), None)
    if device is not None:
        qf, gf = qf.to(device), gf.to(device)
    if normalize:
        qf, gf = F.normalize(qf, p=2, dim=1), F.normalize(gf, p=2, dim=1)
    distmat = compute_distance_matrix(qf, gf, metric).cpu().numpy()
    if rerank:
        from .. import compat
        distmat = compat.utils.re_ranking(
            distmat, compute_distance_matrix(qf, qf, metric).cpu().numpy(),
            compute_distance_matrix(gf, gf, metric).cpu().numpy())
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank,
                             use_metric_cuhk03, chunk_size)
    return cmc, mAP, distmat
