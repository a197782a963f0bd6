"""Feature space alignment between MTs and ATs (Sec. 3.5, Eq. 5-9, Tables 3-4) and the soft
parameter sharing penalty of Fig. 10 (Sec. 5.3.2)."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Tuple

import torch

from .triplet import cosine_distance


def class_means(x: torch.Tensor, targets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of every identity present in the batch (Eq. 6-7): (S, d) and the labels."""
    labels, index = torch.unique(targets, return_inverse=True)
    sums = x.new_zeros(len(labels), x.shape[1]).index_add_(0, index, x)
    counts = torch.bincount(index, minlength=len(labels)).to(x.dtype).unsqueeze(1)
    return sums / counts, labels


def class_wise_alignment_loss(h: torch.Tensor, g: torch.Tensor,
                              targets: torch.Tensor) -> torch.Tensor:
    """L_CF (Eq. 8): mean over the batch's identities of D(mean_i h, mean_i g).

    Args:
        h (Tensor): (N, d) MT representations (Eq. 2).
        g (Tensor): (N, d) AT representations (Eq. 5).
        targets (Tensor): (N,) identities (any number of images each).

    Examples::

        >>> class_wise_alignment_loss(h, g, pids)
    """
    h_bar, _ = class_means(h, targets)
    g_bar, _ = class_means(g, targets)
    return cosine_distance(h_bar, g_bar).mean()


def sample_wise_alignment_loss(h: torch.Tensor, g: torch.Tensor,
                               targets: torch.Tensor = None) -> torch.Tensor:
    """L_SF (Eq. 9, as in [24]): mean over images of D(h_i, g_i)."""
    return cosine_distance(h, g).mean()


def batch_wise_alignment_loss(h: torch.Tensor, g: torch.Tensor,
                              targets: torch.Tensor = None) -> torch.Tensor:
    """Batch-wise variant (Tables 3-4, MMD-like): D between the means over the whole batch;
    ignores the labels."""
    return cosine_distance(h.mean(0, keepdim=True), g.mean(0, keepdim=True)).squeeze(0)


def no_alignment_loss(h, g, targets=None) -> torch.Tensor:
    return h.new_zeros(())


ALIGNMENT_LOSSES: Dict[str, Callable] = {
    "class_wise": class_wise_alignment_loss,
    "sample_wise": sample_wise_alignment_loss,
    "batch_wise": batch_wise_alignment_loss,
    "none": no_alignment_loss,
}

TRIPLET_INPUTS = ("h", "h_plus_g")


def build_alignment_loss(name: str) -> Callable:
    """``fn(h, g, targets)`` for a name of :data:`ALIGNMENT_LOSSES`."""
    if name not in ALIGNMENT_LOSSES:
        raise ValueError(f"unknown alignment loss '{name}' (mpn.loss.alignment); choose one of "
                         f"{sorted(ALIGNMENT_LOSSES)}")
    return ALIGNMENT_LOSSES[name]


def triplet_features(h: torch.Tensor, g: torch.Tensor, mode: str = "h") -> torch.Tensor:
    """What the triplet loss sees: h (the paper) or h + g element-wise (the sample-wise
    constraint of [10] in Tables 3-4)."""
    if mode == "h":
        return h
    if mode == "h_plus_g":
        return h + g
    raise ValueError(f"unknown triplet input '{mode}' (mpn.loss.triplet_input); choose one of "
                     f"{TRIPLET_INPUTS}")


def soft_sharing_penalty(pairs: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                         weight: float) -> torch.Tensor:
    """Soft parameter sharing (Fig. 10): ``weight * sum ||p_mt - p_at||_2^2`` over the pairs
    (squared L2 distance summed over all elements)."""
    pairs = list(pairs)
    total = sum(((a - b) ** 2).sum() for a, b in pairs)
    return weight * total
