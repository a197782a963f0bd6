"""A check that every image of the train, query and gallery lists decodes, before training.

torchreid's ``read_image`` retries an unreadable file forever, so one truncated, empty or
non-image ``.jpg`` hangs training (any ``data.workers``). :func:`check_dataset_images` decodes
each image of a built ``ImageDataManager`` once (threads, tqdm progress) and, following
``data.corrupt_images``:

* ``error`` (default): raises :class:`~mpn_plugin.compat.UnreadableImageError` naming the files
  (all of them in ``save_dir/unreadable_images.txt``);
* ``skip``: lists them in ``save_dir/skipped_images.txt``, logs them, and returns them;
  :func:`datasets_without` then rebuilds the data without them.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Sequence, Tuple

from .. import compat
from ..progress import progress_bar as tqdm  # throttled without a terminal

CORRUPT_IMAGE_POLICIES = ("error", "skip")


def dataset_image_lists(datamanager) -> Dict[str, List[str]]:
    """Split name -> image paths (each once, in order) of a torchreid ``ImageDataManager``:
    ``train`` (all sources), ``<target> query`` and ``<target> gallery``."""
    loaders = {"train": datamanager.train_loader}
    if getattr(datamanager, "train_loader_t", None) is not None:
        loaders["train (targets)"] = datamanager.train_loader_t
    for name, split in datamanager.test_loader.items():
        loaders.update({f"{name} {kind}": loader for kind, loader in split.items()})
    return {split: list(dict.fromkeys(item[0] for item in loader.dataset.data))
            for split, loader in loaders.items()}


def _read_error(path: str):
    try:
        compat.read_image(path)
    except OSError as exc:
        return str(exc)
    return None


def find_unreadable_images(paths: Sequence[str], workers: int = 2,
                           desc: str = "image check") -> List[Tuple[str, str]]:
    """Decode every image once; returns ``(path, reason)`` of those that fail.

    Args:
        paths: image files.
        workers (int): decoding threads (PIL releases the GIL while decoding).
        desc (str): label of the tqdm progress bar.

    Examples::

        >>> find_unreadable_images(['ok.jpg', 'empty.jpg'])
        [('empty.jpg', "image 'empty.jpg' cannot be read (UnidentifiedImageError: ...")]
    """
    with ThreadPoolExecutor(max_workers=max(1, int(workers))) as pool:
        errors = list(tqdm(pool.map(_read_error, paths), total=len(paths), desc=desc,
                           unit="img", leave=False, disable=None))
    return [(p, e) for p, e in zip(paths, errors) if e is not None]


def check_dataset_images(datamanager, policy: str = "error", save_dir: str = "",
                         workers: int = 2, write_list: bool = True) -> List[str]:
    """Check every image of ``datamanager`` (:func:`dataset_image_lists`) before training.

    Args:
        datamanager (ImageDataManager): the built data.
        policy (str): ``error`` or ``skip`` (``data.corrupt_images``).
        save_dir (str): where the list of bad files is written.
        workers (int): decoding threads.
        write_list (bool): write the list (False on the non-main ranks of torchrun).

    Returns:
        list: the unreadable paths to leave out (empty when every image decodes).

    Raises:
        UnreadableImageError: with ``policy='error'``, naming the files and the fix.

    Examples::

        >>> skipped = check_dataset_images(datamanager, 'skip', 'log/run')
    """
    if policy not in CORRUPT_IMAGE_POLICIES:
        raise ValueError(f"data.corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}"
                         f", got '{policy}'")
    lists = dataset_image_lists(datamanager)
    paths = list(dict.fromkeys(p for split in lists.values() for p in split))
    bad = dict(find_unreadable_images(paths, workers))
    if not bad:
        print(f"Image check: all {len(paths)} images decode")
        return []
    splits = ", ".join(f"{sum(p in bad for p in v)} in {k}" for k, v in lists.items()
                       if any(p in bad for p in v))
    listing = osp.join(save_dir, "skipped_images.txt" if policy == "skip"
                       else "unreadable_images.txt")
    if write_list:
        os.makedirs(save_dir or ".", exist_ok=True)
        with open(listing, "w", encoding="utf-8") as f:
            f.writelines(f"{p}\t{reason}\n" for p, reason in bad.items())
    examples = "\n  ".join(list(bad)[:5]) + ("\n  ..." if len(bad) > 5 else "")
    if policy == "error":
        raise compat.UnreadableImageError(
            f"{len(bad)} of {len(paths)} images cannot be read ({splits}): truncated, empty or "
            f"not images:\n  {examples}\nFirst error: {next(iter(bad.values()))}\nAll of them "
            f"are listed in '{listing}'. Replace or delete them, or set data.corrupt_images "
            "skip to train and test without them.")
    print(f"WARNING: skipping {len(bad)} unreadable images ({splits}) "
          f"(data.corrupt_images skip), listed in '{listing}':\n  {examples}")
    return list(bad)


class _WithoutImages(compat.ImageDataset):
    """Sits between a dataset class and torchreid's ``ImageDataset`` (see
    :func:`datasets_without`): drops the excluded paths from train, query and gallery, and
    relabels the training identities 0..N-1 (an identity may have lost every image)."""

    excluded_images: frozenset = frozenset()

    def __init__(self, train, query, gallery, **kwargs):
        def keep(items):
            return [item for item in items if item[0] not in self.excluded_images]

        train = keep(train)
        label = {pid: i for i, pid in enumerate(sorted({item[1] for item in train}))}
        train = [(item[0], label[item[1]], *item[2:]) for item in train]
        super().__init__(train, keep(query), keep(gallery), **kwargs)


@contextlib.contextmanager
def datasets_without(names: Iterable[str], excluded: Iterable[str]):
    """Within the block, the torchreid datasets ``names`` leave out the image paths
    ``excluded`` (each registered class is replaced by a subclass that filters the lists it
    passes to ``ImageDataset.__init__``); the registrations are restored afterwards.

    Examples::

        >>> with datasets_without(['synthetic_pedestrians'], skipped):
        ...     datamanager = ImageDataManager(sources='synthetic_pedestrians', ...)
    """
    excluded = frozenset(excluded)
    registry = vars(compat.datasets)["__image_datasets"]
    saved = {name: registry[name] for name in dict.fromkeys(names) if name in registry}
    try:
        if excluded:
            for name, cls in saved.items():
                filtered = type(cls.__name__, (cls, _WithoutImages),
                                {"excluded_images": excluded, "__module__": cls.__module__})
                compat.register_image_dataset(name, filtered, overwrite=True)
        yield
    finally:
        for name, cls in saved.items():
            compat.register_image_dataset(name, cls, overwrite=True)


__all__ = ["CORRUPT_IMAGE_POLICIES", "dataset_image_lists", "find_unreadable_images",
           "check_dataset_images", "datasets_without"]
