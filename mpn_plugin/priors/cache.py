"""One prior cache file per dataset: stage-1 masks and stage-2 priors, keyed by image path
relative to the dataset folder.

Format: a compressed ``.npz`` with

* ``header``: JSON (tool name and version, feature size, image count, content fingerprint,
  pipeline config, format version);
* ``relpaths`` (N,) str; ``case`` (N,) uint8 (0 prior, 1 fallback); ``top``/``bottom`` (N,);
* ``feature_masks``: bit-packed M at the header's feature size, (N, ceil(Hf*Wf/8));
* ``image_masks``: the bit-packed stage-1 masks at image resolution, concatenated, with
  ``image_mask_shapes`` (N, 2) and ``image_mask_offsets`` (N + 1,) (fallbacks: shape 0 x 0);
* ``image_sizes`` (N,) int64 and ``image_digests`` (N,) uint64: each image file's size and a
  64-bit BLAKE2b digest of its bytes (:func:`image_signature`), when the writer was given the
  image folder (``tools/generate_priors.py`` always does).

A cache from another tool version, feature size or dataset content is rejected with a message
saying what differs and how to regenerate it; :meth:`PriorCache.check_images` compares the
images on disk with the ones the cache was made for (training calls it). A damaged (truncated)
file raises :class:`DamagedPriorCacheError` naming it. Writing is resumable and atomic:
:class:`PriorCacheWriter` saves finished records in chunk files beside the target (each written
to a temporary file in the same folder, then renamed), skips damaged chunks and stale
temporaries of a killed run, and merges the chunks at the end, sorted by relative path.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..file_io import save_atomically

FORMAT_VERSION = 1
REGENERATE = "python tools/generate_priors.py --dataset <name> --root <data root> --adapter <tool>"
_CHUNK_NAME = re.compile(r"^chunk_(\d{5})\.npz$")
_SIGNATURE_KEYS = ("image_sizes", "image_digests")


@dataclass
class PriorRecord:
    """One image's cached prior."""
    mask_image: Optional[np.ndarray]   # stage-1 mask (H, W) bool, None for a fallback
    mask: np.ndarray                   # M (Hf, Wf) float32
    top: float
    bottom: float
    case: str


def dataset_fingerprint(root: str, relpaths: Iterable[str]) -> str:
    """Hash of the sorted relative paths and file sizes: changes when images are added,
    removed or replaced."""
    h = hashlib.sha256()
    for rel in sorted(relpaths):
        p = osp.join(root, rel)
        h.update(rel.encode())
        h.update(str(osp.getsize(p) if osp.exists(p) else -1).encode())
    return h.hexdigest()[:16]


def image_signature(path: str) -> Tuple[int, int]:
    """(size in bytes, 64-bit BLAKE2b digest of the bytes) of an image file; (-1, 0) if it
    does not exist."""
    if not osp.isfile(path):
        return -1, 0
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=8)).digest()
    return osp.getsize(path), int.from_bytes(digest, "little")


class StalePriorCacheError(ValueError):
    """The cache does not match the dataset, tool or feature size it is used with."""


class DamagedPriorCacheError(StalePriorCacheError):
    """A cache or chunk file that cannot be read (truncated by a full disk or an interrupted
    copy, or not a prior cache at all)."""


def _read_npz(path: str, rebuild: str) -> Dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, or :class:`DamagedPriorCacheError` naming the file and
    ``rebuild`` (the command that makes it again)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise DamagedPriorCacheError(
            f"prior cache file '{path}' is damaged ({type(exc).__name__}: {exc}): it was "
            f"truncated (disk full, interrupted copy or write) or is not a prior cache. "
            f"Rebuild it: {rebuild}") from exc


def _save_npz_atomic(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` through :func:`save_atomically`: a kill at any moment leaves
    either the previous file or the complete new one (and at worst a ``*.tmp`` file)."""
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez appends no ".npz" to it
            np.savez_compressed(f, **arrays)
    save_atomically(write, path)


def _remove_stale_temporaries(pattern: str) -> None:
    """Remove temporary files a killed writer left (``*.tmp``; ``*.tmp.npz`` of older versions)."""
    for tmp in glob.glob(pattern + ".tmp") + glob.glob(pattern + ".tmp.npz"):
        os.remove(tmp)


class PriorCache:
    """Read access to a cache file. Use :meth:`load`."""

    def __init__(self, header: Dict, arrays: Dict[str, np.ndarray], path: str = ""):
        self.header, self.path = header, path
        self._a = arrays
        self._index = {r: i for i, r in enumerate(arrays["relpaths"].tolist())}

    @classmethod
    def load(cls, path: str, expected_tool: Optional[str] = None,
             expected_version: Optional[str] = None,
             expected_feature_size: Optional[Tuple[int, int]] = None,
             dataset_fingerprint: Optional[str] = None,
             regenerate: Optional[str] = None) -> "PriorCache":
        """Load and validate a cache file.

        Args:
            regenerate (str): the complete command that makes this cache for the caller (its
                data, feature size and ``--out``, with ``--overwrite``), named by every error
                below. Without it, errors name the command stored in the cache's header (it
                repeats the settings the cache was made with) or a template.

        Raises:
            FileNotFoundError: no file (with the command that makes one).
            DamagedPriorCacheError: the file cannot be read (with the command that rebuilds it).
            StalePriorCacheError: a header field differs from what is expected.
        """
        if not osp.isfile(path):
            raise FileNotFoundError(f"prior cache '{path}' does not exist; make it with: "
                                    f"{regenerate or REGENERATE}")
        rebuild = regenerate or f"{REGENERATE} --out {path} --overwrite"
        arrays = _read_npz(path, rebuild)
        if "header" not in arrays or "relpaths" not in arrays:
            raise DamagedPriorCacheError(
                f"'{path}' is not a prior cache (no header/relpaths). Rebuild it: {rebuild}")
        header = json.loads(str(arrays.pop("header")))
        checks = [("tool", expected_tool, header.get("tool")),
                  ("tool_version", expected_version, header.get("tool_version")),
                  ("feature_size", list(expected_feature_size) if expected_feature_size else None,
                   header.get("feature_size")),
                  ("fingerprint", dataset_fingerprint, header.get("fingerprint"))]
        for name, want, got in checks:
            if want is not None and want != got:
                raise StalePriorCacheError(
                    f"prior cache '{path}' was made with {name}={got}, but {name}={want} is "
                    f"needed here: it belongs to another tool, feature size or dataset content. "
                    f"Regenerate it: "
                    f"{regenerate or (header.get('command') or REGENERATE) + ' --overwrite'}")
        return cls(header, arrays, path)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, relpath: str) -> bool:
        return relpath in self._index

    def relpaths(self) -> List[str]:
        return list(self._index)

    def get(self, relpath: str) -> PriorRecord:
        if relpath not in self._index:
            raise KeyError(f"no prior for '{relpath}' in cache '{self.path}'; regenerate: "
                           f"{self.header.get('command') or REGENERATE} --overwrite")
        i = self._index[relpath]
        a = self._a
        Hf, Wf = self.header["feature_size"]
        M = np.unpackbits(a["feature_masks"][i])[:Hf * Wf].reshape(Hf, Wf).astype(np.float32)
        h, w = a["image_mask_shapes"][i]
        mask_image = None
        if h * w:
            o0, o1 = a["image_mask_offsets"][i], a["image_mask_offsets"][i + 1]
            mask_image = np.unpackbits(a["image_masks"][o0:o1])[:h * w].reshape(h, w).astype(bool)
        case = "fallback" if a["case"][i] else "prior"
        return PriorRecord(mask_image, M, float(a["top"][i]), float(a["bottom"][i]), case)

    def changed_images(self, image_root: str, relpaths: Optional[Iterable[str]] = None,
                       max_hashed: int = 2000) -> List[Tuple[str, str]]:
        """(relpath, what differs) of the images under ``image_root`` that are not the files
        the cache was made for.

        Sizes are compared for every image of ``relpaths`` (default: all of the cache; paths
        not in the cache are ignored), content digests for at most ``max_hashed`` of them
        (evenly spread; all of them up to that number). A cache without per-image signatures
        (made before they were stored) is checked with its header fingerprint (paths and
        sizes), which cannot tell which images differ; a cache made without an image folder
        (no ``dataset_dir`` in its header) is not checked.
        """
        if not all(k in self._a for k in _SIGNATURE_KEYS):
            if "dataset_dir" not in self.header or "fingerprint" not in self.header:
                return []
            if dataset_fingerprint(image_root, self.relpaths()) == self.header["fingerprint"]:
                return []
            missing = [(r, "file missing") for r in self.relpaths()
                       if not osp.isfile(osp.join(image_root, r))]
            return missing or [("(some images)", "file sizes differ; this cache is too old to "
                                                  "say which")]
        rels = sorted(self._index if relpaths is None else
                      {r for r in relpaths if r in self._index})
        hashed = set(rels if len(rels) <= max_hashed else
                     [rels[i] for i in np.linspace(0, len(rels) - 1, max_hashed).astype(int)])
        sizes, digests = self._a["image_sizes"], self._a["image_digests"]
        changed = []
        for rel in rels:
            i, path = self._index[rel], osp.join(image_root, rel)
            size = osp.getsize(path) if osp.isfile(path) else -1
            if size < 0:
                changed.append((rel, "file missing"))
            elif size != sizes[i]:
                changed.append((rel, f"{size} bytes now, {sizes[i]} when the cache was made"))
            elif rel in hashed and image_signature(path)[1] != digests[i]:
                changed.append((rel, "same size, other content"))
        return changed

    def check_images(self, image_root: str, relpaths: Optional[Iterable[str]] = None,
                     regenerate: str = REGENERATE) -> None:
        """Raise :class:`StalePriorCacheError` if :meth:`changed_images` finds any: the cache
        was made for another image set (e.g. another copy of the dataset with the same file
        names), naming the cache, the images and ``regenerate`` (the command that rebuilds it).

        Examples::

            >>> cache = PriorCache.load('data/synthetic_pedestrians/priors_synthetic_8x4.npz')
            >>> cache.check_images('data/synthetic_pedestrians')
        """
        changed = self.changed_images(image_root, relpaths)
        if not changed:
            return
        checked = len(self) if relpaths is None else len({r for r in relpaths if r in self})
        made_for = self.header.get("dataset_dir")
        examples = "; ".join(f"'{r}': {why}" for r, why in changed[:5])
        raise StalePriorCacheError(
            f"prior cache '{self.path}' was made for other images than those in '{image_root}'"
            f"{f' (it was made for {made_for!r})' if made_for else ''}: {len(changed)} of "
            f"{checked} images differ ({examples}{'; ...' if len(changed) > 5 else ''}). The "
            f"images were replaced or this is another image set with the same file names. "
            f"Regenerate the priors: {regenerate} --overwrite")

    def summary(self) -> Dict:
        n = len(self)
        fb = int(self._a["case"].sum())
        return {"images": n, "fallbacks": fb, "fallback_fraction": fb / n if n else 0.0,
                "tool": self.header.get("tool"), "feature_size": self.header.get("feature_size")}


class PriorCacheWriter:
    """Collects records and writes the cache; resumable through chunk files.

    Every file (chunk or cache) is written atomically: a kill leaves the previous files intact
    and at most a temporary file, which the next writer removes. A damaged chunk is removed
    with a warning (its images are processed again).

    Args:
        path (str): the cache file to write.
        header (dict): tool, tool_version, feature_size, fingerprint, config...
        chunk_size (int): records per chunk file (written as soon as full).
        image_root (str, optional): the folder the relative paths point into; when given, each
            image's size and content digest are stored (see :meth:`PriorCache.check_images`).
        overwrite (bool): start from scratch, discarding an unfinished run's chunks.

    Raises:
        StalePriorCacheError: an unfinished run of other settings or images is in the way.

    Examples::

        >>> w = PriorCacheWriter('priors.npz', header, image_root='data/my_set')
        >>> todo = [r for r in relpaths if r not in w.done]
        >>> w.add(rel, mask_image, prior) ...
        >>> w.finish()
    """

    _RESUME_KEYS = ("tool", "tool_version", "feature_size", "fingerprint")

    def __init__(self, path: str, header: Dict, chunk_size: int = 500,
                 image_root: Optional[str] = None, overwrite: bool = False):
        self.path, self.header, self.chunk_size = path, dict(header), chunk_size
        self.image_root = image_root
        self.parts_dir = path + ".parts"
        if overwrite and osp.isdir(self.parts_dir):
            shutil.rmtree(self.parts_dir)
        _remove_stale_temporaries(path + ".*")
        _remove_stale_temporaries(path)
        os.makedirs(self.parts_dir, exist_ok=True)
        _remove_stale_temporaries(osp.join(self.parts_dir, "*"))
        self._pending: List[tuple] = []
        self.done = set()
        meta = osp.join(self.parts_dir, "header.json")
        old = self._read_meta(meta)
        if old is not None:
            if {k: old.get(k) for k in self._RESUME_KEYS} != \
                    {k: header.get(k) for k in self._RESUME_KEYS}:
                raise StalePriorCacheError(
                    f"unfinished run in '{self.parts_dir}' used other settings or images "
                    f"({ {k: old.get(k) for k in self._RESUME_KEYS} }, now "
                    f"{ {k: header.get(k) for k in self._RESUME_KEYS} }): rerun with "
                    f"--overwrite to start over (or delete that folder)")
            for part in self._parts():
                try:
                    relpaths = _read_npz(part, "")["relpaths"]
                except (DamagedPriorCacheError, KeyError) as exc:
                    warnings.warn(f"removed the damaged chunk '{part}' of an unfinished run "
                                  f"({exc.__cause__ or exc}); its images are processed again")
                    os.remove(part)
                    continue
                self.done.update(relpaths.tolist())
        else:
            tmp = meta + ".tmp"
            with open(tmp, "w") as f:
                json.dump(header, f)
            os.replace(tmp, meta)

    def _read_meta(self, meta: str) -> Optional[Dict]:
        """The header of an unfinished run, or None (none, or unreadable: then its chunks
        cannot be trusted and are removed)."""
        if not osp.exists(meta):
            return None
        try:
            with open(meta) as f:
                return json.load(f)
        except ValueError:
            warnings.warn(f"'{meta}' is damaged: removing the unfinished run in "
                          f"'{self.parts_dir}' and starting over")
            for part in self._parts():
                os.remove(part)
            os.remove(meta)
            return None

    def _parts(self) -> List[str]:
        """The finished chunk files, in order (temporaries and other files excluded)."""
        names = os.listdir(self.parts_dir) if osp.isdir(self.parts_dir) else []
        return [osp.join(self.parts_dir, n) for n in sorted(names) if _CHUNK_NAME.match(n)]

    def add(self, relpath: str, mask_image: Optional[np.ndarray], prior) -> None:
        self._pending.append((relpath, mask_image, prior))
        self.done.add(relpath)
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        arrays = _pack(self._pending, self.image_root)
        parts = self._parts()
        index = int(_CHUNK_NAME.match(osp.basename(parts[-1])).group(1)) + 1 if parts else 0
        _save_npz_atomic(osp.join(self.parts_dir, f"chunk_{index:05d}.npz"), arrays)
        self._pending = []

    def finish(self) -> PriorCache:
        """Merge every chunk into the single cache file (records sorted by relative path, so
        an interrupted and resumed run gives the same file contents as an uninterrupted one),
        remove the chunks, return the cache."""
        self.flush()
        rebuild = f"rerun the same command with --overwrite (it rebuilds '{self.path}')"
        chunks = [_read_npz(part, rebuild) for part in self._parts()]
        arrays = _sorted_by_relpath(_concat(chunks))
        self.header.update(image_count=int(len(arrays["relpaths"])), format_version=FORMAT_VERSION)
        arrays["header"] = np.array(json.dumps(self.header))
        _save_npz_atomic(self.path, arrays)
        shutil.rmtree(self.parts_dir)
        return PriorCache.load(self.path)


def _pack(records, image_root: Optional[str] = None) -> Dict[str, np.ndarray]:
    rel, case, top, bottom, feat, shapes, packed = [], [], [], [], [], [], []
    for r, mask_image, prior in records:
        rel.append(r)
        case.append(prior.case == "fallback")
        top.append(prior.top)
        bottom.append(prior.bottom)
        feat.append(np.packbits(prior.mask.astype(bool).ravel()))
        if mask_image is None:
            shapes.append((0, 0))
            packed.append(np.zeros(0, np.uint8))
        else:
            shapes.append(mask_image.shape)
            packed.append(np.packbits(np.asarray(mask_image, bool).ravel()))
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in packed])]).astype(np.int64)
    out = {"relpaths": np.array(rel, dtype=str), "case": np.array(case, np.uint8),
           "top": np.array(top, np.float32), "bottom": np.array(bottom, np.float32),
           "feature_masks": np.stack(feat),
           "image_mask_shapes": np.array(shapes, np.int32).reshape(-1, 2),
           "image_masks": np.concatenate(packed) if packed else np.zeros(0, np.uint8),
           "image_mask_offsets": offsets}
    if image_root is not None:
        signatures = [image_signature(osp.join(image_root, r)) for r in rel]
        out["image_sizes"] = np.array([s for s, _ in signatures], np.int64)
        out["image_digests"] = np.array([d for _, d in signatures], np.uint64)
    return out


def _concat(chunks) -> Dict[str, np.ndarray]:
    if not chunks:
        raise ValueError("no prior records were written")
    keys = ["relpaths", "case", "top", "bottom", "feature_masks", "image_mask_shapes",
            "image_masks"]
    keys += [k for k in _SIGNATURE_KEYS if all(k in c for c in chunks)]
    out = {k: np.concatenate([c[k] for c in chunks]) for k in keys}
    offsets, base = [np.zeros(1, np.int64)], 0
    for c in chunks:
        offsets.append(c["image_mask_offsets"][1:] + base)
        base += c["image_mask_offsets"][-1]
    out["image_mask_offsets"] = np.concatenate(offsets)
    return out


def _sorted_by_relpath(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The records of ``arrays`` in relative-path order (the image masks moved with them)."""
    order = np.argsort(arrays["relpaths"], kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return arrays
    offsets = arrays["image_mask_offsets"]
    pieces = [arrays["image_masks"][offsets[i]:offsets[i + 1]] for i in order]
    out = {k: v[order] for k, v in arrays.items() if k not in ("image_masks", "image_mask_offsets")}
    out["image_masks"] = np.concatenate(pieces)
    out["image_mask_offsets"] = np.concatenate(
        [[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
    return out
