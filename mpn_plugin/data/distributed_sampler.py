"""Identity sampler for multi-process training (``torchrun``, DistributedDataParallel).

torchreid's ``RandomIdentitySampler`` draws S identities x A images per batch for one process.
With N processes, :class:`DistributedIdentitySampler` gives every rank its own S x A batch per
step: within an epoch the ranks' identities are disjoint (an identity belongs to one rank for
the whole epoch), and the draw depends only on ``(seed, epoch)``, so every rank computes the
same global plan and takes its own share without communication. The batch-hard
triplet loss (Eq. 3) and the class-wise alignment loss (Eq. 8) are computed per rank on that
rank's S x A batch, as in the paper's per-batch definition.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


class DistributedIdentitySampler(Sampler):
    """S identities x A images per rank and step; identities disjoint across ranks in an epoch.

    Every epoch the identities are shuffled by ``(seed, epoch)`` and dealt to the ranks (rank r
    gets every N-th one), so the ranks' identities are disjoint within the epoch. Each rank then
    samples like torchreid's ``RandomIdentitySampler`` from its own identities: each identity's
    images are shuffled and cut into chunks of A (one chunk drawn with replacement when it has
    fewer than A), and each batch takes one chunk from each of S distinct identities that still
    have chunks. So an epoch sees (almost) every training image once over all ranks, as in a
    single-process epoch. All ranks compute the whole plan, so they agree on the number of steps
    (the smallest rank's count) without communication.

    Args:
        data_source (list): torchreid items ``(path, pid, camid, ...)`` (or dicts with ``pid``).
        batch_size (int): per-rank batch size S x A.
        num_instances (int): A, images per identity in a batch.
        num_replicas (int): number of processes (world size).
        rank (int): this process's rank.
        seed (int): base seed; the draw of epoch e depends on ``(seed, e)`` only.

    Call :meth:`set_epoch` before each epoch (the engines of ``tools/train.py`` do).

    Examples::

        >>> sampler = DistributedIdentitySampler(dataset.train, batch_size=48, num_instances=4,
        ...                                      num_replicas=2, rank=0, seed=1)
        >>> loader = DataLoader(train_set, batch_size=48, sampler=sampler, drop_last=True)
    """

    def __init__(self, data_source: Sequence, batch_size: int, num_instances: int,
                 num_replicas: int = 1, rank: int = 0, seed: int = 0):
        if batch_size % num_instances:
            raise ValueError(f"batch_size ({batch_size}) must be a multiple of num_instances "
                             f"({num_instances}): each batch holds S identities x A images")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_instances = num_instances
        self.ids_per_batch = batch_size // num_instances
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        index: Dict[int, List[int]] = defaultdict(list)
        for i, item in enumerate(data_source):
            index[int(item["pid"] if isinstance(item, dict) else item[1])].append(i)
        self.index = dict(sorted(index.items()))
        self.pids = list(self.index)
        if len(self.pids) < self.ids_per_batch * num_replicas:
            raise ValueError(
                f"{len(self.pids)} training identities cannot fill one step of "
                f"{num_replicas} ranks x {self.ids_per_batch} identities: lower train.batch_size "
                "or the number of processes")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the plan of this epoch (the same on every rank)."""
        self.epoch = int(epoch)
        plans = [self._plan(r) for r in range(self.num_replicas)]
        self.steps = min(len(p) for p in plans)
        self._batches = plans[self.rank][:self.steps]

    def _generator(self, *salt: int) -> torch.Generator:
        value = self.seed
        for x in (self.epoch, *salt):
            value = (value * 1000003 + x) % (2 ** 63 - 1)
        return torch.Generator().manual_seed(value)

    def _plan(self, rank: int) -> List[List[int]]:
        """Rank ``rank``'s batches this epoch: lists of S x A dataset indices."""
        order = torch.randperm(len(self.pids), generator=self._generator(-1)).tolist()
        own = [self.pids[i] for i in order[rank::self.num_replicas]]
        g, A = self._generator(rank), self.num_instances
        chunks: Dict[int, List[List[int]]] = {}
        for pid in own:
            idx = self.index[pid]
            if len(idx) < A:
                picks = torch.randint(len(idx), (A,), generator=g).tolist()
            else:
                picks = torch.randperm(len(idx), generator=g).tolist()
                picks = picks[:len(picks) - len(picks) % A]
            chunks[pid] = [[idx[i] for i in picks[k:k + A]] for k in range(0, len(picks), A)]
        batches, available = [], [p for p in own if chunks[p]]
        while len(available) >= self.ids_per_batch:
            sel = torch.randperm(len(available), generator=g)[:self.ids_per_batch].tolist()
            chosen = [available[i] for i in sel]
            batches.append([i for pid in chosen for i in chunks[pid].pop()])
            available = [p for p in available if chunks[p]]
        return batches

    def batches(self, rank: int) -> List[List[int]]:
        """The pids of each of ``rank``'s batches this epoch (any rank can compute it)."""
        plan = self._plan(rank)[:self.steps]
        pid_of = {i: pid for pid, idx in self.index.items() for i in idx}
        return [[pid_of[i] for i in b[::self.num_instances]] for b in plan]

    def __iter__(self) -> Iterator[int]:
        for batch in self._batches:
            yield from batch

    def __len__(self) -> int:
        return self.steps * self.ids_per_batch * self.num_instances
