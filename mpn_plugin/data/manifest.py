"""Datasets of your own crops: a manifest CSV read directly by a registered torchreid dataset.

torchreid's Market-1501 parser reads only ``*.jpg`` files named ``PPPP_cC...``, at most 6
cameras and person ids <= 1501. A manifest has no such limits: one row per image,

    path,pid,camid,split          (split: train / query / gallery)

with ``path`` absolute or relative to the manifest's folder (image files stay where they are,
so a prior cache made for them is reused as is; a UTF-8 BOM, as Excel writes it, is fine).
``tools/prepare_dataset.py`` writes it from a folder of crops (filename pattern, regex, preset
such as CUHK01, or a ``path,pid,camid`` CSV).

The dataset is registered as ``custom_crops`` (plain) and ``custom_crops_prior`` (with the
coarse priors MPN trains with) by :mod:`mpn_plugin.data.prior_datasets`; ``data.root`` is the
folder holding ``manifest.csv`` (or its parent, with the manifest in ``<root>/custom_crops/``).
The prior cache ``priors_<tool>_<Hf>x<Wf>.npz`` lives beside the manifest, keyed by image path
relative to the deepest folder holding all the images (so a parsing/mask folder mirroring the
crop folder matches).

Examples::

    >>> datamanager = torchreid.data.ImageDataManager(
    ...     root="data/my_crops", sources="custom_crops_prior", height=128, width=64)
    >>> rows = read_manifest("data/my_crops/manifest.csv")
"""
from __future__ import annotations

import csv
import os.path as osp
from dataclasses import dataclass
from typing import List, Tuple

from .. import compat

__all__ = ["MANIFEST_NAME", "SPLITS", "ManifestRow", "read_manifest", "write_manifest",
           "find_manifest", "ManifestDataset"]

MANIFEST_NAME = "manifest.csv"
SPLITS = ("train", "query", "gallery")
FIELDS = ("path", "pid", "camid", "split")


@dataclass(frozen=True)
class ManifestRow:
    path: str       # absolute
    pid: int
    camid: int
    split: str


def write_manifest(path: str, rows: List[ManifestRow]) -> None:
    """Write ``rows`` as a manifest CSV (absolute image paths)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([r.path, r.pid, r.camid, r.split])


def read_manifest(path: str) -> List[ManifestRow]:
    """Read and validate a manifest CSV.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a missing column, a non-integer pid/camid or an unknown split, naming the
            line and the fix.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"manifest '{path}' does not exist: make it with python "
                                f"tools/prepare_dataset.py ... --out {osp.dirname(path) or '.'}")
    base = osp.dirname(osp.abspath(path))
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:  # a BOM if Excel saved it
        reader = csv.DictReader(f)
        missing = [c for c in FIELDS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"manifest '{path}': missing column(s) {missing}; the header must be "
                             f"{','.join(FIELDS)}")
        for line, rec in enumerate(reader, start=2):
            try:
                pid, camid = int(rec["pid"]), int(rec["camid"])
            except (TypeError, ValueError):
                raise ValueError(f"manifest '{path}' line {line}: pid {rec['pid']!r} and camid "
                                 f"{rec['camid']!r} must be integers") from None
            if rec["split"] not in SPLITS:
                raise ValueError(f"manifest '{path}' line {line}: split {rec['split']!r} must be "
                                 f"one of {SPLITS}")
            p = rec["path"]
            rows.append(ManifestRow(p if osp.isabs(p) else osp.normpath(osp.join(base, p)),
                                    pid, camid, rec["split"]))
    return rows


def find_manifest(root: str, dataset_dir: str) -> str:
    """``<root>/manifest.csv`` if present, else ``<root>/<dataset_dir>/manifest.csv``."""
    root = osp.abspath(osp.expanduser(root))
    for candidate in (osp.join(root, MANIFEST_NAME), osp.join(root, dataset_dir, MANIFEST_NAME)):
        if osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"no {MANIFEST_NAME} in '{root}' or '{osp.join(root, dataset_dir)}': set data.root to the "
        f"folder written by python tools/prepare_dataset.py --out <folder> (it holds "
        f"{MANIFEST_NAME})")


def common_image_root(rows: List[ManifestRow]) -> str:
    """The deepest folder holding every image of the manifest."""
    return osp.commonpath([osp.dirname(r.path) for r in rows]) if rows else ""


def _splits(rows: List[ManifestRow]) -> Tuple[list, list, list]:
    """torchreid 3-tuples per split; train pids and camids relabelled to 0..N-1."""
    train_rows = [r for r in rows if r.split == "train"]
    pid_label = {p: i for i, p in enumerate(sorted({r.pid for r in train_rows}))}
    cams = sorted({r.camid for r in rows})
    cam_label = {c: i for i, c in enumerate(cams)}
    train = [(r.path, pid_label[r.pid], cam_label[r.camid]) for r in train_rows]
    query = [(r.path, r.pid, cam_label[r.camid]) for r in rows if r.split == "query"]
    gallery = [(r.path, r.pid, cam_label[r.camid]) for r in rows if r.split == "gallery"]
    return train, query, gallery


class ManifestDataset(compat.ImageDataset):
    """A torchreid image dataset read from a manifest CSV (any image format, any number of
    cameras and identities).

    Args:
        root (str): the folder holding ``manifest.csv`` (or its parent, see :func:`find_manifest`).
        **kwargs: torchreid's ``ImageDataset`` arguments (transform, mode, ...).

    Examples::

        >>> ds = ManifestDataset(root="data/my_crops", mode="train")
    """

    dataset_dir = "custom_crops"

    def __init__(self, root: str = "", **kwargs):
        manifest = find_manifest(root, type(self).dataset_dir)
        self.manifest_path = manifest
        self.dataset_dir = osp.dirname(manifest)          # the prior cache lives here
        self.root = osp.abspath(osp.expanduser(root))
        rows = read_manifest(manifest)
        # prior caches key images by their path relative to this folder (see generate_priors)
        self._image_root = common_image_root(rows)
        train, query, gallery = _splits(rows)
        for split, items in (("train", train), ("query", query), ("gallery", gallery)):
            if not items:
                raise ValueError(f"manifest '{manifest}' has no {split} images: rerun "
                                 f"tools/prepare_dataset.py (see its summary.json for what was "
                                 f"skipped)")
        super().__init__(train, query, gallery, **kwargs)

    @property
    def image_root(self) -> str:
        """The folder prior caches key this dataset's images against."""
        return self._image_root

