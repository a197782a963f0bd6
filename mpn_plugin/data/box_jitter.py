"""Detector-like box errors for prepared crops: a development set with misalignment.

Hand-drawn or tightly cropped datasets (CUHK01) are well aligned, so the problem MPN's priors
address (Fig. 1: heads or feet cut off, people too small or off-centre) hardly exists there.
This module re-crops every image of a prepared dataset, training and test alike, with the
detection error model of the synthetic generator (:class:`~mpn_plugin.data.synthetic.
SyntheticConfig`: the person's scale in the box uniform in ``box_scale``, the box shifted by a
normal ``box_shift_std`` fraction of its height and width):

* a crop of height H and width W shows the person at about the scale the generator calls 1;
  scale s is obtained by a new box of (H / s) x (W / s) around the crop's centre, so s > 1 cuts
  off head and feet and s < 1 adds margin;
* the person moves by (dy * H, dx * W) in the output, i.e. the box moves by the opposite
  amount;
* the part of the new box outside the original crop is filled by replicating the crop's border
  pixels (the closest a crop of the lost full frame can get: a detector's box that leaves the
  crop would show the surrounding scene, which is gone);
* the new box is resized back to H x W (bilinear), so image sizes and the dataset layout do
  not change.

The parameters of image ``i`` are a function of the seed and the image's manifest path only
(not of the order or of other images), and are written next to the images
(``box_jitter.csv``), so a run can be reproduced and inspected.

Examples::

    >>> jitter = BoxJitter(seed=0)
    >>> box = jitter.box_for("0001001.png")       # (scale, dy, dx)
    >>> out = apply_box_error(image, box)          # same (H, W, 3) shape
"""
from __future__ import annotations

import csv
import hashlib
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

from ..file_io import save_atomically
from .synthetic import SyntheticConfig

_GENERATOR = SyntheticConfig()

#: the file listing every jittered image and its (scale, dy, dx)
JITTER_LOG = "box_jitter.csv"
#: the folder (under the dataset's output folder) that holds the jittered images
JITTER_DIR = "jittered"


@dataclass
class BoxJitter:
    """The detection error model (the synthetic generator's defaults).

    Attributes:
        seed (int): the parameters of an image are a function of this seed and its key.
        box_scale (tuple): range of the person's scale in the box (uniform).
        box_shift_std (tuple): std of the vertical / horizontal shift (fractions of H, W).
    """
    seed: int = 0
    box_scale: Tuple[float, float] = field(default_factory=lambda: tuple(_GENERATOR.box_scale))
    box_shift_std: Tuple[float, float] = field(
        default_factory=lambda: tuple(_GENERATOR.box_shift_std))

    def __post_init__(self):
        lo, hi = self.box_scale
        if not 0 < lo <= hi:
            raise ValueError(f"box_scale must be 0 < low <= high, got {self.box_scale}")
        if min(self.box_shift_std) < 0:
            raise ValueError(f"box_shift_std must be >= 0, got {self.box_shift_std}")

    def box_for(self, key: str) -> Tuple[float, float, float]:
        """(scale, dy, dx) of the image named ``key`` (deterministic by seed and key)."""
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])
        return (float(rng.uniform(*self.box_scale)), float(rng.normal(0, self.box_shift_std[0])),
                float(rng.normal(0, self.box_shift_std[1])))


def apply_box_error(image: np.ndarray, box: Tuple[float, float, float]) -> np.ndarray:
    """Re-crop ``image`` (H, W[, C]) with the box error ``(scale, dy, dx)`` (module docstring).

    ``(1, 0, 0)`` returns the image unchanged. Pixels of the new box outside the image replicate
    its border; the result is resized back to (H, W).
    """
    scale, dy, dx = box
    H, W = image.shape[:2]
    box_h, box_w = H / scale, W / scale                       # the detector's box, in pixels
    # the person (at the crop's centre) appears at +dy*H, +dx*W in the output: box moves back
    top = (H - box_h) / 2 - dy * box_h
    left = (W - box_w) / 2 - dx * box_w
    # affine map output pixel (u, v) -> source (left + u * box_w / W, top + v * box_h / H)
    sx, sy = box_w / W, box_h / H
    # pixel centres: src = left + (u + 0.5) * sx - 0.5
    matrix = np.array([[sx, 0.0, left + 0.5 * sx - 0.5],
                       [0.0, sy, top + 0.5 * sy - 0.5]], dtype=np.float64)
    return cv2.warpAffine(image, matrix, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def jitter_images(paths: Sequence[str], keys: Sequence[str], out_dir: str,
                  jitter: BoxJitter) -> Tuple[Dict[str, str], List[Tuple[float, float, float]]]:
    """Write a jittered copy of every image to ``<out_dir>/jittered/<key>`` (same format),
    and ``<out_dir>/box_jitter.csv`` (key, scale, dy, dx). Existing copies are rewritten.

    Args:
        paths: the images (absolute paths).
        keys: a unique relative name per image (its name in the output folder and the key of
            its parameters).
        out_dir: the prepared dataset's folder.
        jitter: the error model.

    Returns:
        (dict original path -> jittered path, the (scale, dy, dx) of every image in order).

    Raises:
        ValueError: an image cannot be decoded (named).
    """
    if len(set(keys)) != len(keys):
        raise ValueError("jitter_images: the keys must be unique")
    base = osp.join(osp.abspath(out_dir), JITTER_DIR)
    mapping, rows, boxes = {}, [], []
    for path, key in zip(paths, keys):
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"box jitter: cannot decode '{path}'")
        box = jitter.box_for(key)
        dest = osp.join(base, key)
        os.makedirs(osp.dirname(dest), exist_ok=True)
        ext = osp.splitext(dest)[1] or ".png"
        ok, encoded = cv2.imencode(ext, apply_box_error(image, box))
        if not ok:
            raise ValueError(f"box jitter: cannot encode '{dest}'")
        save_atomically(lambda tmp, data=encoded.tobytes(): _write_bytes(tmp, data), dest)
        mapping[path] = dest
        boxes.append(box)
        rows.append((key, *(round(v, 5) for v in box)))

    def write_log(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "scale", "dy", "dx"])
            w.writerows(rows)
    save_atomically(write_log, osp.join(out_dir, JITTER_LOG))
    return mapping, boxes


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def jitter_summary(jitter: BoxJitter, boxes: List[Tuple[float, float, float]]) -> Dict:
    """The options and the spread of the drawn boxes, for the dataset's summary.json."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 3)
    return {"seed": jitter.seed, "box_scale": list(jitter.box_scale),
            "box_shift_std": list(jitter.box_shift_std), "images": len(arr),
            "fill": "replicate the crop's border pixels", "folder": JITTER_DIR,
            "parameters": JITTER_LOG,
            "scale_mean_std": [round(float(arr[:, 0].mean()), 4), round(float(arr[:, 0].std()), 4)]
            if len(arr) else [],
            "dy_std": round(float(arr[:, 1].std()), 4) if len(arr) else 0.0,
            "dx_std": round(float(arr[:, 2].std()), 4) if len(arr) else 0.0}
