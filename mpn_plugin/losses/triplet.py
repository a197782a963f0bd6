"""Cosine batch-hard triplet loss on the MT representation h (Eq. 3-4)."""
from __future__ import annotations

import torch
import torch.nn.functional as Fn


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise D(a_i, b_i) = 1 - cos(a_i, b_i) (Eq. 4): (N, d), (N, d) -> (N,)."""
    return 1.0 - Fn.cosine_similarity(a, b, dim=1, eps=1e-12)


def pairwise_cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """D between every row of x and every row of y: (N, d), (M, d) -> (N, M)."""
    return 1.0 - Fn.normalize(x, dim=1, eps=1e-12) @ Fn.normalize(y, dim=1, eps=1e-12).t()


def cosine_batch_hard_triplet_loss(features: torch.Tensor, targets: torch.Tensor,
                                   margin: float = 0.2, return_num_violating: bool = False):
    """Eq. 3: for each anchor the hardest positive (largest D to a same-identity image, the
    anchor itself included) and the hardest negative (smallest D to another identity);
    ``[d_ap - d_an + margin]_+`` summed over anchors and divided by N_T, the number of anchors
    whose triplet violates the margin (exactly 0 when N_T = 0).

    An identity with a single image in the batch has only itself as positive (d_ap = 0).
    Anchors without any negative (one identity in the batch) contribute nothing.

    Args:
        features (Tensor): (N, d), e.g. h of Eq. 2.
        targets (Tensor): (N,) identity labels (any order, any count per identity).
        margin (float): alpha (0.2 in the paper).
        return_num_violating (bool): also return N_T.

    Examples::

        >>> loss = cosine_batch_hard_triplet_loss(h, pids, margin=0.2)
    """
    dist = pairwise_cosine_distance(features, features)            # (N, N)
    same = targets.view(-1, 1) == targets.view(1, -1)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(1)
    d_an = dist.masked_fill(same, float("inf")).amin(1)
    has_neg = torch.isfinite(d_an)
    hinge = torch.relu(d_ap - d_an + margin)
    hinge = torch.where(has_neg, hinge, torch.zeros_like(hinge))
    num_violating = int((hinge > 0).sum())
    loss = hinge.sum() / max(num_violating, 1)
    return (loss, num_violating) if return_num_violating else loss
