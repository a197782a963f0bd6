"""Multi-process training with ``torchrun`` on PyTorch's DistributedDataParallel.

``torchrun --nproc_per_node=N tools/train.py --config-file ...`` sets ``WORLD_SIZE``, ``RANK``
and ``LOCAL_RANK``; :func:`init_distributed` then joins the process group (NCCL on GPUs, gloo
on CPU). Each rank trains on its own S x A batch (``train.batch_size`` is per process; the
global batch is N times larger) drawn by
:class:`~mpn_plugin.data.distributed_sampler.DistributedIdentitySampler`; gradients are averaged
by DDP. Rank 0 alone logs, writes checkpoints and evaluates (features are extracted on rank 0
only, from the unwrapped model: the test sets are small next to training, and the others go on
to the next epoch and wait for rank 0 at their first gradient all-reduce).

Without ``WORLD_SIZE`` (or with 1) nothing here does anything: single-process runs are
unchanged.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader

from .data.distributed_sampler import DistributedIdentitySampler


def init_distributed() -> Optional[Tuple[int, int, int]]:
    """Join the process group when launched by torchrun; returns (rank, world, local_rank)
    or None for a single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, or the model itself."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel,
                                              nn.DataParallel)) else model


def wrap_model(model: nn.Module, local_rank: int, sync_bn: bool = False) -> nn.Module:
    """DistributedDataParallel around ``model`` (already on its device). ``sync_bn`` converts
    the backbone's BatchNorm2d layers to SyncBatchNorm (the heads' grouped BN stay per rank).

    Raises:
        ValueError: ``sync_bn`` for a model on CPU (PyTorch's SyncBatchNorm runs on GPUs only;
            DDP would refuse it after the conversion with a less helpful message).
    """
    cuda = next(model.parameters()).is_cuda
    if sync_bn and not cuda:
        raise ValueError("train.sync_bn True needs GPUs (PyTorch's SyncBatchNorm runs on CUDA "
                         "only); on CPU each process keeps its own BatchNorm statistics: set "
                         "train.sync_bn False")
    if sync_bn:
        if hasattr(model, "backbone"):
            model.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(model.backbone)
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[local_rank] if cuda else None,
        output_device=local_rank if cuda else None)


def distributed_train_loader(loader: DataLoader, batch_size: int, num_instances: int,
                             seed: int) -> DataLoader:
    """torchreid's train loader rebuilt with a :class:`DistributedIdentitySampler` for this
    rank (same dataset, transforms, batch size, workers)."""
    dataset = loader.dataset
    sampler = DistributedIdentitySampler(getattr(dataset, "train", dataset),
                                         batch_size, num_instances, dist.get_world_size(),
                                         dist.get_rank(), seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      drop_last=True)


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()
