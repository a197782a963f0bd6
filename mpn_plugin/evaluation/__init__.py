"""Evaluation at scale: vectorised, chunked CMC/mAP (drop-in for torchreid's evaluate_rank).

* :func:`evaluate_rank` - CMC/mAP of a distance matrix, identical to torchreid's (market1501 and
  cuhk03 metrics), 30x faster than its Python fallback on a Market-1501-sized problem
  (docs/results_evaluation.md; 29x for :func:`evaluate_features`).
* :func:`evaluate_features` - the same from features, a chunk of queries at a time: memory
  bounded by ``chunk_size x G`` (MSMT17 fits in < 1 GB).
* :func:`rank_and_evaluate` - the distance + ranking step of the engines' ``_evaluate``
  (:class:`~mpn_plugin.engine.mixins.EngineMixin`).
* :func:`compute_distance_matrix` - torchreid's distances (squared euclidean / 1 - cosine).
"""
from .distance import compute_distance_matrix
from .rank import auto_chunk_size, evaluate_features, evaluate_rank, rank_and_evaluate

__all__ = ["evaluate_rank", "evaluate_features", "rank_and_evaluate", "compute_distance_matrix",
           "auto_chunk_size"]
