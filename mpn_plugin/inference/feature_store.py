"""Features of many images on disk, in fixed-size columnar shards that can be resumed.

A feature store is a folder::

    meta.json            format, shard size, feature dim, the model (config hash, checkpoint
                         path + sha256 or ONNX sha256, input size, flip, amp), the inputs
                         (count, sha256 of the ordered list), completion and skip counts
    items.csv            every planned input in order: path,pid,camid (-1 when unknown)
    shard_00000.npy      (n, K*D) float32 features of the readable inputs of items
                         [0, S), in order (S = shard size)
    shard_00000.csv      the S inputs of the shard: path,pid,camid,row,error
                         (row: line in the .npy, -1 with the reason in ``error`` when skipped)
    ...

Shard ``i`` always covers the inputs ``[i*S, (i+1)*S)``, and is written atomically (``.npy``
first, then its ``.csv``, each with :func:`mpn_plugin.file_io.save_atomically`): a shard counts
as done when its ``.csv`` exists. An interrupted run started again with the same inputs and
model skips the done shards and writes the others exactly as an uninterrupted run would. A
gallery of millions of crops is therefore never held in memory: one shard at a time is
extracted, and readers memory-map the ``.npy`` files.

Examples::

    >>> items = list_images('crops/')                       # recursive, sorted
    >>> write_feature_store(extractor, items, 'features/gallery', shard_size=10000)
    >>> store = FeatureStore('features/gallery')
    >>> for feats, rows in store.iter_shards(): ...         # feats (n, D) memory-mapped
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..data.manifest import read_manifest
from ..data.prepare import (
    IMAGE_EXTS,
    identity_from_match,
    images_under,
    pattern_to_regex,
    preset_regex,
)
from ..file_io import save_atomically
from ..progress import progress_bar as tqdm  # throttled without a terminal

__all__ = ["Item", "FeatureStore", "write_feature_store", "list_images", "items_from_manifest",
           "identities_from_names", "FORMAT"]

FORMAT = "mpn-reid-features/1"
META, ITEMS = "meta.json", "items.csv"


@dataclass(frozen=True)
class Item:
    """One input image; ``pid``/``camid`` are -1 when unknown."""
    path: str
    pid: int = -1
    camid: int = -1


def list_images(folder: str) -> List[Item]:
    """Every image file (by extension, :data:`mpn_plugin.data.prepare.IMAGE_EXTS`) under
    ``folder``, recursively, sorted by path."""
    return [Item(p) for p in images_under(folder) if p.lower().endswith(IMAGE_EXTS)]


def identities_from_names(items: Sequence[Item], pattern: Optional[str] = None,
                          preset: Optional[str] = None) -> List[Item]:
    """Read ``pid``/``camid`` from file names with a ``{pid}_c{cam}_*.jpg`` pattern or a preset
    of :data:`mpn_plugin.data.prepare.PRESETS` (e.g. ``market1501``). A name that does not
    match keeps -1 (unknown)."""
    import re
    if preset:
        regex, cam_fn = preset_regex(preset)
    else:
        regex, cam_fn = pattern_to_regex(pattern), None
    rx, out = re.compile(regex), []
    for it in items:
        m = rx.match(osp.basename(it.path))
        if m is None:
            out.append(it)
            continue
        out.append(Item(it.path, *identity_from_match(m, cam_fn)))
    return out


def items_from_manifest(path: str, splits: Sequence[str] = ()) -> List[Item]:
    """Items of a manifest CSV (``path,pid,camid,split``; see :mod:`mpn_plugin.data.manifest`),
    optionally only the given splits, in file order."""
    return [Item(r.path, r.pid, r.camid) for r in read_manifest(path)
            if not splits or r.split in splits]


def _items_sha256(items: Sequence[Item]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.path}\t{it.pid}\t{it.camid}\n".encode())
    return h.hexdigest()


def _write_csv(path: str, header: Sequence[str], rows) -> None:
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    save_atomically(write, path)


def _write_json(path: str, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    save_atomically(write, path)


def _save_npy(path: str, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:            # a file object: np.save would add ".npy"
            np.save(f, array)
    save_atomically(write, path)


def _settings(meta: dict) -> dict:
    """What a resumed run must share with the interrupted one."""
    return {"shard size": meta["shard_size"], "model": meta["model"],
            "input list": (meta["inputs"]["num_items"], meta["inputs"]["items_sha256"])}


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def write_feature_store(extractor, items: Sequence[Item], out_dir: str, shard_size: int = 10000,
                        skip_unreadable: bool = False, overwrite: bool = False,
                        source: str = "", progress: bool = True) -> dict:
    """Extract the features of ``items`` into a feature store, resuming an interrupted run.

    Args:
        extractor (FeatureExtractor): gives the features and ``metadata`` (model hashes).
        items (sequence of Item): the inputs, in the order they are stored.
        out_dir (str): the store's folder (created).
        shard_size (int): inputs per shard.
        skip_unreadable (bool): store unreadable files as skipped rows (reason in the shard's
            CSV, counted in ``meta.json``) instead of stopping with their name.
        overwrite (bool): start again when ``out_dir`` holds a store of other inputs, model
            or shard size (default: refuse, naming what differs).
        source (str): where the inputs came from (folder or manifest), for the metadata.
        progress (bool): tqdm bar over shards.

    Returns:
        dict: the store's metadata (``meta.json``).

    Raises:
        ValueError: ``out_dir`` holds a store made with other settings (and not ``overwrite``).
        UnreadableImageError: an unreadable image, when not ``skip_unreadable``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    items = list(items)
    os.makedirs(out_dir, exist_ok=True)
    meta = {"format": FORMAT, "shard_size": int(shard_size), "model": extractor.metadata,
            "inputs": {"source": source, "num_items": len(items),
                       "items_sha256": _items_sha256(items)},
            "num_shards": (len(items) + shard_size - 1) // shard_size}
    meta_path = osp.join(out_dir, META)
    if osp.isfile(meta_path) and not overwrite:
        with open(meta_path) as f:
            old = _settings(json.load(f))
        for key, new in _settings(meta).items():
            if old.get(key) != new:
                raise ValueError(f"feature store {out_dir!r} was started with another {key} "
                                 f"({old.get(key)} != {new}); resume with the same inputs, "
                                 "model and shard size, choose another output folder, or pass "
                                 "--overwrite")
    elif overwrite:
        for name in os.listdir(out_dir):
            if name.startswith("shard_") or name in (META, ITEMS):
                os.remove(osp.join(out_dir, name))
    meta["complete"] = False
    _write_json(meta_path, meta)
    _write_csv(osp.join(out_dir, ITEMS), ("path", "pid", "camid"),
               ([it.path, it.pid, it.camid] for it in items))

    todo = [i for i in range(meta["num_shards"])
            if not osp.isfile(osp.join(out_dir, shard_name(i) + ".csv"))]
    if len(todo) < meta["num_shards"]:
        print(f"[features] resuming {out_dir}: {meta['num_shards'] - len(todo)} of "
              f"{meta['num_shards']} shards done")
    for i in tqdm(todo, desc="shards", unit="shard", disable=None if progress else True):
        shard = items[i * shard_size:(i + 1) * shard_size]
        result = extractor.extract([it.path for it in shard], skip_unreadable=skip_unreadable)
        base = osp.join(out_dir, shard_name(i))
        feats = result.features.numpy().astype(np.float32)
        _save_npy(base + ".npy", feats)
        row_of = {pos: r for r, pos in enumerate(result.indices)}
        reason_of = {pos: reason for pos, _, reason in result.skipped}
        _write_csv(base + ".csv", ("path", "pid", "camid", "row", "error"),
                   ([it.path, it.pid, it.camid, row_of.get(j, -1), reason_of.get(j, "")]
                    for j, it in enumerate(shard)))
    store = FeatureStore(out_dir, require_complete=False)
    skipped = store.skipped()
    meta.update(complete=True, num_features=store.num_features, feature_dim=store.feature_dim,
                num_skipped=len(skipped))
    _write_json(meta_path, meta)
    if skipped:
        print(f"[features] skipped {len(skipped)} unreadable file(s) (listed with their reason "
              f"in the shard CSVs of {out_dir}):")
        for path, reason in skipped[:20]:
            print(f"  {path}: {reason}")
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more")
    return meta


class FeatureStore:
    """Read a feature store written by :func:`write_feature_store`.

    Args:
        path (str): the store's folder.
        require_complete (bool): refuse a store whose extraction has not finished.

    Examples::

        >>> store = FeatureStore('features/gallery')
        >>> feats, rows = store.load()              # small stores: everything in memory
        >>> store.meta['model']['checkpoint_sha256']
    """

    def __init__(self, path: str, require_complete: bool = True):
        meta_path = osp.join(path, META)
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f"{path!r} is not a feature store (no {META}); make one with "
                                    f"python tools/extract_features.py ... --out {path}")
        with open(meta_path) as f:
            self.meta = json.load(f)
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT}")
        if require_complete and not self.meta.get("complete"):
            raise ValueError(f"feature store {path!r} is incomplete (interrupted extraction); "
                             "run the same tools/extract_features.py command again to finish it")
        self.path = path
        self.num_shards = int(self.meta["num_shards"])

    def shard(self, index: int, mmap: bool = True) -> Tuple[np.ndarray, List[dict]]:
        """(features (n, D), rows) of shard ``index``; rows: dicts path/pid/camid of the
        feature rows, in order (skipped inputs are not among them)."""
        base = osp.join(self.path, shard_name(index))
        with open(base + ".csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["row"]) >= 0]
        feats = np.load(base + ".npy", mmap_mode="r" if mmap else None)
        if len(feats) != len(rows):
            raise ValueError(f"{base}.npy holds {len(feats)} features for {len(rows)} rows of "
                             f"{base}.csv; extract the store again (--overwrite)")
        return feats, [{"path": r["path"], "pid": int(r["pid"]), "camid": int(r["camid"])}
                       for r in rows]

    def iter_shards(self, mmap: bool = True) -> Iterator[Tuple[np.ndarray, List[dict]]]:
        for i in range(self.num_shards):
            yield self.shard(i, mmap)

    def load(self) -> Tuple[np.ndarray, List[dict]]:
        """All features (N, D) in memory and their rows."""
        feats, rows = [], []
        for f, r in self.iter_shards(mmap=False):
            feats.append(f)
            rows += r
        return np.concatenate(feats) if feats else np.zeros((0, self.feature_dim), np.float32), rows

    def skipped(self) -> List[Tuple[str, str]]:
        """(path, reason) of every input left out as unreadable."""
        out = []
        for i in range(self.num_shards):
            with open(osp.join(self.path, shard_name(i) + ".csv"), newline="") as f:
                out += [(r["path"], r["error"]) for r in csv.DictReader(f) if int(r["row"]) < 0]
        return out

    @property
    def num_features(self) -> int:
        return sum(np.load(osp.join(self.path, shard_name(i) + ".npy"), mmap_mode="r").shape[0]
                   for i in range(self.num_shards))

    @property
    def feature_dim(self) -> int:
        for i in range(self.num_shards):
            a = np.load(osp.join(self.path, shard_name(i) + ".npy"), mmap_mode="r")
            if a.ndim == 2 and a.shape[1]:
                return int(a.shape[1])
        return int(self.meta.get("feature_dim", 0))
