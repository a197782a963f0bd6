"""Draw coarse priors so a person can check them by eye: for each image, the image, the person
mask overlay, the ROI (upper/lower boundary lines) and the K part strips between them.

Examples::

    python tools/visualize_priors.py --cache data/synthetic_pedestrians/priors_synthetic_16x8.npz \
        --num 24 --out docs/priors_synthetic.png
"""
from __future__ import annotations

import argparse
import os.path as osp

import cv2
import numpy as np

from . import cache as cache_mod

STRIP_COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                (145, 30, 180), (70, 240, 240), (240, 50, 230)]


def draw_prior(img: np.ndarray, record, num_parts: int, scale: int = 2) -> np.ndarray:
    """Three panels (RGB): image | mask overlay + ROI lines | K strips within the ROI."""
    H, W = img.shape[:2]
    img = cv2.resize(img, (W * scale, H * scale), interpolation=cv2.INTER_NEAREST)
    H, W = img.shape[:2]
    mask = record.mask_image if record.mask_image is not None else np.ones(img.shape[:2], bool)
    mask = cv2.resize(mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    overlay = img.copy()
    overlay[mask] = (0.5 * overlay[mask] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    # feature-size M as a grid of dots
    Hf, Wf = record.mask.shape
    for r in range(Hf):
        for c in range(Wf):
            if record.mask[r, c]:
                centre = (int((c + 0.5) * W / Wf), int((r + 0.5) * H / Hf))
                cv2.circle(overlay, centre, 2, (255, 255, 0), -1)
    top, bottom = int(record.top * H), int(record.bottom * H) - 1
    for y in (top, bottom):
        cv2.line(overlay, (0, y), (W - 1, y), (0, 255, 0), 1)
    strips = img.copy()
    edges = np.linspace(record.top * H, record.bottom * H, num_parts + 1)
    for k in range(num_parts):
        y0, y1 = int(edges[k]), int(edges[k + 1])
        color = np.array(STRIP_COLORS[k % len(STRIP_COLORS)])
        strips[y0:y1] = (0.55 * strips[y0:y1] + 0.45 * color).astype(np.uint8)
    tag = (255, 0, 0) if record.case == "fallback" else (0, 200, 0)
    cv2.rectangle(strips, (0, 0), (W - 1, H - 1), tag, 2)
    return np.hstack([img, overlay, strips])


def make_grid(cache, image_root: str, num: int, num_parts: int = 6, cols: int = 6,
              seed: int = 0, relpaths=None) -> np.ndarray:
    """A contact sheet of ``num`` random images of the cache (or of ``relpaths``, in order)."""
    rels = cache.relpaths()
    rng = np.random.default_rng(seed)
    chosen = list(relpaths) if relpaths is not None else \
        [rels[i] for i in sorted(rng.choice(len(rels), min(num, len(rels)), replace=False))]
    tiles = []
    for rel in chosen:
        img = cv2.imread(osp.join(image_root, rel))
        if img is None:
            raise FileNotFoundError(f"image '{osp.join(image_root, rel)}' of the cache is missing")
        tiles.append(draw_prior(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), cache.get(rel), num_parts))
    h = max(t.shape[0] for t in tiles)
    w = max(t.shape[1] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, h - t.shape[0] + 4, 0, w - t.shape[1] + 4,
                                cv2.BORDER_CONSTANT, value=(255, 255, 255)) for t in tiles]
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)]
    return np.vstack(rows)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/visualize_priors.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", required=True, help="a cache written by tools/generate_priors.py")
    p.add_argument("--images", default="", help="image root (default: the cache's dataset dir)")
    p.add_argument("--num", type=int, default=24)
    p.add_argument("--num-parts", type=int, default=6)
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    return p


def main(argv=None):
    """Run ``tools/visualize_priors.py`` with ``argv`` (flags: :func:`build_parser`)."""
    a = build_parser().parse_args(argv)
    cache = cache_mod.PriorCache.load(a.cache)
    root = a.images or cache.header.get("dataset_dir", "")
    grid = make_grid(cache, root, a.num, a.num_parts, a.cols, a.seed)
    cv2.imwrite(a.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"wrote {a.out} ({grid.shape[1]}x{grid.shape[0]}); legend: red overlay = person mask, "
          f"yellow dots = M at feature size, green lines = ROI, coloured strips = the "
          f"{a.num_parts} parts, red frame = fallback prior")


if __name__ == "__main__":
    main()
