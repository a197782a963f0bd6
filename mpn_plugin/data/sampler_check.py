"""Checks of the identity sampler against the training set (docs/RESULTS.md, real crops).

torchreid's ``RandomIdentitySampler`` draws ``num_instances`` (A) images per identity into a
batch and uses each identity about ``images / A`` times per epoch. With A close to the number
of images of an identity, every identity is in one batch per epoch: on CUHK01 (~4 images per
identity) with A=4 the ID losses of MPN, its Baseline and even a plain softmax model stayed at
chance for 6-10 epochs from ImageNet weights, and A=2 left the plateau in epoch 2-3.
"""
from __future__ import annotations

import statistics
from collections import Counter
from typing import Iterable, Optional


def images_per_identity(train: Iterable) -> Counter:
    """pid -> number of training images, for torchreid's ``(path, pid, camid, ...)`` items."""
    return Counter(item[1] for item in train)


def identity_sampler_warning(train: Iterable, num_instances: int,
                             min_batches_per_identity: int = 2) -> Optional[str]:
    """A warning naming ``sampler.num_instances`` when the median identity is in fewer than
    ``min_batches_per_identity`` batches per epoch, else None.

    Args:
        train: torchreid's training items ``(path, pid, camid, ...)``.
        num_instances (int): A of ``RandomIdentitySampler``.
        min_batches_per_identity (int): batches per identity and epoch asked for.

    Examples::

        >>> identity_sampler_warning([("a", 0, 0), ("b", 0, 1), ("c", 1, 0), ("d", 1, 1)], 2)
        'sampler.num_instances=2 with a median of 2 training images per identity: ...'
    """
    counts = images_per_identity(train)
    if not counts:
        return None
    median = statistics.median(counts.values())
    if median // num_instances >= min_batches_per_identity:
        return None
    suggested = max(1, int(median // min_batches_per_identity))
    return (f"sampler.num_instances={num_instances} with a median of {median:g} training "
            f"images per identity: each identity is in about {max(1, int(median // num_instances))}"
            f" batch(es) per epoch, and ID losses can stay at chance for many epochs "
            f"(docs/RESULTS.md, real crops). Consider sampler.num_instances {suggested} "
            f"(at most half the images of a typical identity).")


def identities_per_batch_error(train: Iterable, batch_size: int,
                               num_instances: int) -> Optional[str]:
    """The error of a batch that asks for more identities than the training set has, else None.

    ``RandomIdentitySampler`` puts ``batch_size // num_instances`` identities in a batch and
    asserts (a bare ``AssertionError``, while ``ImageDataManager`` is built) that the training
    set has at least that many.

    Args:
        train: torchreid's training items ``(path, pid, camid, ...)``.
        batch_size (int): ``train.batch_size``.
        num_instances (int): ``sampler.num_instances`` (A).

    Examples::

        >>> identities_per_batch_error([("a", 0, 0), ("b", 1, 0)], batch_size=8, num_instances=2)
        'train.batch_size=8 with sampler.num_instances=2 asks for 4 identities per batch, ...'
    """
    num_ids = len(images_per_identity(train))
    per_batch = batch_size // max(1, num_instances)
    if num_ids >= per_batch:
        return None
    fit_a = batch_size // max(1, num_ids)
    return (f"train.batch_size={batch_size} with sampler.num_instances={num_instances} asks for "
            f"{per_batch} identities per batch (batch_size // num_instances), but the training "
            f"set has only {num_ids} identities. Use train.batch_size "
            f"{max(num_instances, num_ids * num_instances)} or less (identities x num_instances)"
            + (f", or sampler.num_instances {fit_a} or more" if num_ids and fit_a > num_instances
               else "") + ".")


#: ``sampler.num_instances`` value that asks for :func:`derived_num_instances`
AUTO_NUM_INSTANCES = 0


def derived_num_instances(train: Iterable, batch_size: int,
                          min_batches_per_identity: int = 2) -> int:
    """``sampler.num_instances`` (A) derived from the training set: the largest divisor of
    ``batch_size`` that keeps the median identity in at least ``min_batches_per_identity``
    batches per epoch (A <= median images / 2), and at least 2 (the triplet loss needs a
    positive in the batch). One rule for every dataset: CUHK01 (4 images per identity) gets
    2, a set with ~10 images per identity gets 4 at batch 48.

    Examples::

        >>> derived_num_instances([("a", 0, 0)] * 4 + [("b", 1, 0)] * 4, batch_size=48)
        2
    """
    counts = images_per_identity(train)
    if not counts:
        raise ValueError("sampler.num_instances 0 (derived from the data) needs training images")
    limit = int(statistics.median(counts.values()) // min_batches_per_identity)
    divisors = [a for a in range(2, batch_size + 1) if batch_size % a == 0 and a <= limit]
    return max(divisors) if divisors else 2
