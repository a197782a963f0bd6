"""Evaluation at scale: vectorised, chunked CMC/mAP (drop-in for torchreid's evaluate_rank)."""
from .rank import distance_matrix, evaluate_features, evaluate_rank

__all__ = ["evaluate_rank", "evaluate_features", "distance_matrix"]
