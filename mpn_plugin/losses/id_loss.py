"""Identity (ID) loss, Eq. 1: cross-entropy on every part classifier of both tasks.

The minus sign printed in Eq. 1 is a typo: cross-entropy is already positive.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as Fn

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


#: how the K parts' cross-entropies of one task are combined (``mpn.loss.id_reduction``):
#: ``sum`` is Eq. 1; ``mean`` (divide by K, as multi-branch recipes such as MGN weight their
#: heads) is an option beyond the paper
ID_REDUCTIONS = ("sum", "mean")


def part_id_loss(logits: Logits, targets: torch.Tensor, label_smoothing: float = 0.0,
                 reduction: str = "sum") -> torch.Tensor:
    """Eq. 1 for one task: ``sum_k mean_l CE(W_k f_k^l, y^l)``.

    Args:
        logits (Tensor or list): (K, B, C) or K tensors of (B, C).
        targets (Tensor): (B,) identity labels.
        label_smoothing (float): 0 = plain cross-entropy (Eq. 1).
        reduction (str): ``sum`` over parts (Eq. 1) or ``mean`` over parts (1/K of the sum;
            beyond the paper: K heads that pick alike then push the trunk as hard as one).

    Examples::

        >>> part_id_loss(torch.zeros(6, 4, 10), torch.zeros(4, dtype=torch.long))  # 6 * ln 10
        tensor(13.8155)
    """
    if not torch.is_tensor(logits):
        logits = torch.stack(list(logits))
    K, B, C = logits.shape
    # mean over the batch of each part, summed over parts = K * mean over all (k, l)
    if reduction not in ID_REDUCTIONS:
        raise ValueError(f"mpn.loss.id_reduction '{reduction}' is not one of {ID_REDUCTIONS} "
                         "(sum = Eq. 1)")
    ce = Fn.cross_entropy(logits.reshape(K * B, C), targets.repeat(K),
                          label_smoothing=label_smoothing)
    return ce * K if reduction == "sum" else ce

