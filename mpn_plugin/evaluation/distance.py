"""Query-by-gallery distances, bit for bit as torchreid's ``metrics.compute_distance_matrix``.

torchreid's "euclidean" is the *squared* euclidean distance ``|q|^2 + |g|^2 - 2 q.g`` (no
square root, no clamping at 0) and "cosine" is ``1 - cos(q, g)``. The same torch operations are
used here, so the values are identical; the gallery side (``|g|^2`` or the normalised gallery) is
prepared once and reused by every chunk of queries (:func:`prepare_gallery`,
:func:`chunk_distances`).

A chunk of queries can give distances that differ from the full matrix's in the last bit: BLAS
(MKL sgemm here) picks its kernel and its split over threads from the matrix size (observed: a
chunk of 64 rows matches the full matrix bit for bit on every shape tried, 1 to 48 rows on some
shapes only). Rankings then differ only between gallery images whose distances are within about
1e-7 of each other, i.e. ties in all but name.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["compute_distance_matrix", "prepare_gallery", "chunk_distances", "METRICS"]

METRICS = ("euclidean", "cosine")


def _check(qf, gf, metric):
    if not isinstance(qf, torch.Tensor) or not isinstance(gf, torch.Tensor):
        raise TypeError(f"expected torch.Tensor features, got {type(qf).__name__} and "
                        f"{type(gf).__name__}: convert with torch.from_numpy(features)")
    if qf.dim() != 2 or gf.dim() != 2 or qf.size(1) != gf.size(1):
        raise ValueError(f"expected 2-D query/gallery features of equal width, got "
                         f"{tuple(qf.shape)} and {tuple(gf.shape)}")
    if metric not in METRICS:
        raise ValueError(f"unknown distance metric '{metric}': use 'euclidean' or 'cosine' "
                         "(torchreid's test.dist_metric)")


def prepare_gallery(gf: torch.Tensor, metric: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gallery terms shared by all query chunks.

    Returns:
        (g_t, g_sq): ``g_t`` (D, G) is the transposed gallery (normalised for "cosine");
        ``g_sq`` (G,) its squared norms for "euclidean" (empty for "cosine").
    """
    if metric == "cosine":
        return F.normalize(gf, p=2, dim=1).t(), gf.new_empty(0)
    return gf.t(), torch.pow(gf, 2).sum(dim=1)


def chunk_distances(qf: torch.Tensor, gallery: Tuple[torch.Tensor, torch.Tensor],
                    metric: str) -> torch.Tensor:
    """Distances (n, G) of a chunk of queries ``qf`` (n, D) to a prepared gallery."""
    g_t, g_sq = gallery
    if metric == "cosine":
        return 1 - torch.mm(F.normalize(qf, p=2, dim=1), g_t)
    q_sq = torch.pow(qf, 2).sum(dim=1, keepdim=True)                    # (n, 1)
    dist = q_sq + g_sq[None, :]                                          # (n, G)
    return dist.addmm_(qf, g_t, beta=1, alpha=-2)


def compute_distance_matrix(qf: torch.Tensor, gf: torch.Tensor,
                            metric: str = "euclidean") -> torch.Tensor:
    """Full (Q, G) distance matrix, identical to torchreid's ``metrics.compute_distance_matrix``.

    Use it for small problems, re-ranking or visrank;
    :func:`mpn_plugin.evaluation.evaluate_features` never builds the full matrix.

    Args:
        qf (torch.Tensor): query features (Q, D).
        gf (torch.Tensor): gallery features (G, D).
        metric (str): "euclidean" (squared, as torchreid) or "cosine" (1 - cosine similarity).

    Returns:
        torch.Tensor: (Q, G) distances, float32 for float32 features.

    Examples::

        >>> d = compute_distance_matrix(torch.eye(2), torch.eye(2), "euclidean")
        >>> d.tolist()
        [[0.0, 2.0], [2.0, 0.0]]
    """
    _check(qf, gf, metric)
    return chunk_distances(qf, prepare_gallery(gf, metric), metric)
