"""MPN's losses: ID (Eq. 1), cosine batch-hard triplet (Eq. 3-4), feature space alignment
(Eq. 8 and the variants of Tables 3-4), soft parameter sharing (Fig. 10), and their weighted
sum, the total loss of Eq. 10 (:func:`mpn_loss_terms`)."""
from __future__ import annotations

from typing import Dict

import torch

from .alignment import (
    ALIGNMENT_LOSSES,
    batch_wise_alignment_loss,
    build_alignment_loss,
    class_means,
    class_wise_alignment_loss,
    sample_wise_alignment_loss,
    soft_sharing_penalty,
    triplet_features,
)
from .id_loss import part_id_loss
from .total import MPNLossConfig, mpn_loss_terms
from .triplet import cosine_batch_hard_triplet_loss, cosine_distance, pairwise_cosine_distance


def check_finite(losses: Dict[str, torch.Tensor], context: str = "") -> None:
    """Raise ``FloatingPointError`` naming every loss term that is NaN or infinite."""
    bad = [k for k, v in losses.items() if not torch.isfinite(v).all()]
    if bad:
        values = ", ".join(f"{k}={float(losses[k])}" for k in bad)
        raise FloatingPointError(
            f"non-finite loss ({values}){' at ' + context if context else ''}. Try a lower "
            "train.lr or a warm-up (train.warmup_epochs), and check the inputs and priors "
            "(e.g. images that fail to load, empty priors).")


__all__ = ["part_id_loss", "cosine_distance", "pairwise_cosine_distance",
           "cosine_batch_hard_triplet_loss", "class_means", "class_wise_alignment_loss",
           "sample_wise_alignment_loss", "batch_wise_alignment_loss", "ALIGNMENT_LOSSES",
           "build_alignment_loss", "triplet_features", "soft_sharing_penalty", "check_finite",
           "MPNLossConfig", "mpn_loss_terms"]
