"""One prior cache file per dataset: stage-1 masks and stage-2 priors, keyed by image path
relative to the dataset folder.

Format: a compressed ``.npz`` with

* ``header``: JSON (tool name and version, feature size, image count, content fingerprint,
  pipeline config, format version);
* ``relpaths`` (N,) str; ``case`` (N,) uint8 (0 prior, 1 fallback); ``top``/``bottom`` (N,);
* ``feature_masks``: bit-packed M at the header's feature size, (N, ceil(Hf*Wf/8));
* ``image_masks``: the bit-packed stage-1 masks at image resolution, concatenated, with
  ``image_mask_shapes`` (N, 2) and ``image_mask_offsets`` (N + 1,) (fallbacks: shape 0 x 0).

A cache from another tool version, feature size or dataset content is rejected with a message
saying what differs and how to regenerate it. Writing is resumable: :class:`PriorCacheWriter`
saves finished records in chunk files beside the target and merges them at the end.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

FORMAT_VERSION = 1
REGENERATE = "python tools/generate_priors.py --dataset <name> --root <data root> --adapter <tool>"


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


class StalePriorCacheError(ValueError):
    """The cache does not match the dataset, tool or feature size it is used with."""


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
             dataset_fingerprint: Optional[str] = None) -> "PriorCache":
        """Load and validate a cache file.

        Raises:
            FileNotFoundError: no file (with the command that makes one).
            StalePriorCacheError: a header field differs from what is expected.
        """
        if not osp.isfile(path):
            raise FileNotFoundError(f"prior cache '{path}' does not exist; make it with: {REGENERATE}")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
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
                    f"Regenerate it: {REGENERATE} --overwrite")
        return cls(header, arrays, path)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, relpath: str) -> bool:
        return relpath in self._index

    def relpaths(self) -> List[str]:
        return list(self._index)

    def get(self, relpath: str) -> PriorRecord:
        if relpath not in self._index:
            raise KeyError(f"no prior for '{relpath}' in cache '{self.path}'; regenerate: {REGENERATE}")
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

    def summary(self) -> Dict:
        n = len(self)
        fb = int(self._a["case"].sum())
        return {"images": n, "fallbacks": fb, "fallback_fraction": fb / n if n else 0.0,
                "tool": self.header.get("tool"), "feature_size": self.header.get("feature_size")}


class PriorCacheWriter:
    """Collects records and writes the cache; resumable through chunk files.

    Args:
        path (str): the cache file to write.
        header (dict): tool, tool_version, feature_size, fingerprint, config...
        chunk_size (int): records per chunk file (written as soon as full).

    Examples::

        >>> w = PriorCacheWriter('priors.npz', header)
        >>> todo = [r for r in relpaths if r not in w.done]
        >>> w.add(rel, mask_image, prior) ...
        >>> w.finish()
    """

    def __init__(self, path: str, header: Dict, chunk_size: int = 500):
        self.path, self.header, self.chunk_size = path, dict(header), chunk_size
        self.parts_dir = path + ".parts"
        os.makedirs(self.parts_dir, exist_ok=True)
        self._pending: List[tuple] = []
        self.done = set()
        meta = osp.join(self.parts_dir, "header.json")
        if osp.exists(meta):
            with open(meta) as f:
                old = json.load(f)
            if {k: old.get(k) for k in ("tool", "tool_version", "feature_size")} != \
                    {k: header.get(k) for k in ("tool", "tool_version", "feature_size")}:
                raise StalePriorCacheError(
                    f"unfinished run in '{self.parts_dir}' used other settings ({old}); delete "
                    f"that folder or rerun with the same tool and feature size")
            for part in self._parts():
                with np.load(part, allow_pickle=False) as z:
                    self.done.update(z["relpaths"].tolist())
        else:
            with open(meta, "w") as f:
                json.dump(header, f)

    def _parts(self):
        return sorted(glob.glob(osp.join(self.parts_dir, "chunk_*.npz")))

    def add(self, relpath: str, mask_image: Optional[np.ndarray], prior) -> None:
        self._pending.append((relpath, mask_image, prior))
        self.done.add(relpath)
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        arrays = _pack(self._pending)
        out = osp.join(self.parts_dir, f"chunk_{len(self._parts()):05d}.npz")
        np.savez_compressed(out + ".tmp.npz", **arrays)
        os.replace(out + ".tmp.npz", out)
        self._pending = []

    def finish(self) -> PriorCache:
        """Merge every chunk into the single cache file, remove the chunks, return the cache."""
        self.flush()
        chunks = []
        for part in self._parts():
            with np.load(part, allow_pickle=False) as z:
                chunks.append({k: z[k] for k in z.files})
        arrays = _concat(chunks)
        self.header.update(image_count=int(len(arrays["relpaths"])), format_version=FORMAT_VERSION)
        arrays["header"] = np.array(json.dumps(self.header))
        tmp = self.path + ".tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.path)
        for part in self._parts():
            os.remove(part)
        os.remove(osp.join(self.parts_dir, "header.json"))
        os.rmdir(self.parts_dir)
        return PriorCache.load(self.path)


def _pack(records) -> Dict[str, np.ndarray]:
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
    return {"relpaths": np.array(rel, dtype=str), "case": np.array(case, np.uint8),
            "top": np.array(top, np.float32), "bottom": np.array(bottom, np.float32),
            "feature_masks": np.stack(feat), "image_mask_shapes": np.array(shapes, np.int32).reshape(-1, 2),
            "image_masks": np.concatenate(packed) if packed else np.zeros(0, np.uint8),
            "image_mask_offsets": offsets}


def _concat(chunks) -> Dict[str, np.ndarray]:
    if not chunks:
        raise ValueError("no prior records were written")
    out = {k: np.concatenate([c[k] for c in chunks]) for k in
           ("relpaths", "case", "top", "bottom", "feature_masks", "image_mask_shapes", "image_masks")}
    offsets, base = [np.zeros(1, np.int64)], 0
    for c in chunks:
        offsets.append(c["image_mask_offsets"][1:] + base)
        base += c["image_mask_offsets"][-1]
    out["image_mask_offsets"] = np.concatenate(offsets)
    return out
