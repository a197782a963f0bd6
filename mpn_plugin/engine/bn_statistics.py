"""Test-time BatchNorm statistics of MPN's heads, re-estimated from main-task inputs (Sec. 4).

At test time only the main tasks (MT) run. With ``mpn.sharing.batchnorm module`` (the authors'
release) the BNs of layers shared by MT and AT track running statistics of both tasks' inputs
(GMP over the whole F for MT, over masked strips for AT), so MT is normalised at test time
with statistics that are not its own. :func:`recompute_main_task_bn_statistics` replaces the
running statistics of every BN of the test-time heads by their average over training batches
passed through the MT path only (backbone in eval mode, its statistics untouched): the
"precise BN" remedy, ``test.precise_bn_batches`` in configs.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from ..progress import progress_bar as tqdm  # throttled without a terminal


@torch.no_grad()
def recompute_main_task_bn_statistics(model: nn.Module, batches: Iterable, num_batches: int,
                                      device: str = "cpu") -> int:
    """Re-estimate the running mean/var of the test-time heads' BNs from MT inputs only.

    Args:
        model (MPN): the model (unwrapped); its Baseline variant (no MT) uses its AT heads,
            which are its test-time path.
        batches (iterable): training batches, torchreid dicts with ``img`` (a train loader).
        num_batches (int): how many batches to average over (cumulative average, equal
            weights; not the training momentum).
        device (str): where the images go.

    Returns:
        int: the number of batches used.

    Examples::

        >>> recompute_main_task_bn_statistics(model, datamanager.train_loader, 50)
    """
    heads = model.test_time_modules()[1]
    bns = [m for m in heads.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or num_batches <= 0:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None          # cumulative moving average over the batches seen
        bn.train()
    used = 0
    try:
        for data in tqdm(batches, total=num_batches, desc="MT BN statistics", leave=False,
                         disable=None):
            if used >= num_batches:
                break
            imgs = data["img"] if isinstance(data, dict) else data[0]
            feature_map = model.backbone(imgs.to(device), model.backbone_attention)
            if model.main_heads is not None:
                model.main_task(feature_map)
            else:
                model.auxiliary_task(feature_map)
            used += 1
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
        model.train(was_training)
    return used
