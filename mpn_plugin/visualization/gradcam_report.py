"""Per-part Grad-CAM figures (Fig. 8 and Fig. 9 of the paper) for MPN models and torchreid's
``pcb_p6``, plus a measured check that the K maps go top to bottom and follow the person when
the box is shifted.

Examples::

    python tools/visualize_gradcam.py --root data \
      --model MPN=configs/ablation/mpn.yaml:log/ablation/mpn/model/model.pth.tar-12 \
      --model Baseline=configs/ablation/baseline.yaml:log/ablation/baseline/model/model.pth.tar-12 \
      --split query --num 24 --out-dir docs/gradcam
    python tools/visualize_gradcam.py --model MPN=cfg.yaml:ckpt --images img1.jpg folder/
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp

import cv2
import numpy as np
import torch

from .. import compat
from ..build import load_model_spec
from ..file_io import write_json
from ..progress import progress_bar as tqdm  # throttled without a terminal
from .gradcam import centroid_rank_correlation, centroids_ordered, part_gradcam, vertical_centroids


def load_images(args, cfg):
    """[(path, pid or None)] from --images or a split of the config's first target dataset."""
    if args.images:
        paths = []
        for p in args.images:
            paths += sorted(glob.glob(osp.join(p, "*.*"))) if osp.isdir(p) else [p]
        return [(p, None) for p in paths[:args.num]]
    import mpn_plugin.data  # noqa: F401
    ds = compat.data.datasets.init_image_dataset(cfg.data.targets[0], root=cfg.data.root,
                                                  mode=args.split, transform=None, verbose=False)
    rng = np.random.default_rng(args.seed)
    idx = sorted(rng.choice(len(ds.data), min(args.num, len(ds.data)), replace=False))
    return [(ds.data[i][0], ds.data[i][1]) for i in idx]


def to_tensor(img_rgb, cfg):
    x = cv2.resize(img_rgb, (cfg.data.width, cfg.data.height)).astype(np.float32) / 255.0
    x = (x - np.array(cfg.data.norm_mean)) / np.array(cfg.data.norm_std)
    return torch.from_numpy(x.transpose(2, 0, 1)).float().unsqueeze(0)


def overlay(img_rgb, cam):
    heat = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (0.5 * img_rgb + 0.5 * heat).astype(np.uint8)


def labelled_row(name, tiles, scale):
    """One figure row: a name band on the left, then the tiles side by side, upscaled."""
    row = np.hstack(tiles)
    row = cv2.resize(row, (row.shape[1] * scale, row.shape[0] * scale),
                     interpolation=cv2.INTER_NEAREST)
    band = np.full((row.shape[0], 90, 3), 255, np.uint8)
    cv2.putText(band, name[:11], (4, row.shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.hstack([band, row])


def grid(blocks, cols, pad=6):
    """Blocks of equal size in a grid of ``cols`` columns, white padding."""
    h, w = blocks[0].shape[:2]
    rows = -(-len(blocks) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, b in enumerate(blocks):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top:top + h, left:left + w] = b
    return out


def shift_box(img_rgb, dy_frac):
    """Simulate a detection error: move the box down by dy (the person moves up), edge fill."""
    H, W = img_rgb.shape[:2]
    M = np.float32([[1, 0, 0], [0, 1, -dy_frac * H]])
    return cv2.warpAffine(img_rgb, M, (W, H), borderMode=cv2.BORDER_REPLICATE)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/visualize_gradcam.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT")
    p.add_argument("--root", default="")
    p.add_argument("--images", nargs="*", default=[])
    p.add_argument("--split", default="query", choices=["train", "query", "gallery"])
    p.add_argument("--num", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--true-class", action="store_true",
                   help="explain the true identity (train split) instead of the predicted class")
    p.add_argument("--shift", type=float, default=0.15, help="box shift for the follow check")
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="order check: allowed upward step between consecutive centroids "
                        "(fraction of height)")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "hirescam"],
                   help="gradcam (paper, [57]) or hirescam (position-wise gradients; see "
                        "part_gradcam)")
    p.add_argument("--fig8", type=int, default=8,
                   help="how many Fig. 8-style per-image PNGs to write")
    p.add_argument("--grid-num", type=int, default=16, help="images in the Fig. 9-style grid")
    p.add_argument("--grid-cols", type=int, default=4)
    p.add_argument("--scale", type=int, default=2, help="upscaling of the figures")
    p.add_argument("--out-dir", required=True)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return p


def main(argv=None):
    """Run ``tools/visualize_gradcam.py`` with ``argv`` (flags: :func:`build_parser`)."""
    a = build_parser().parse_args(argv)
    os.makedirs(a.out_dir, exist_ok=True)
    models = [load_model_spec(s, a.root, a.opts) for s in a.model]
    items = load_images(a, models[0][2])
    if not items:
        raise FileNotFoundError("no images: give --images paths/folders or a --root with the "
                                "dataset")
    if a.true_class and any(pid is None for _, pid in items):
        raise ValueError("--true-class needs labelled images (a dataset split), not --images")
    stats, grid_blocks = {}, []
    for n, (path, pid) in enumerate(tqdm(items, desc="Grad-CAM", unit="img")):
        bgr = cv2.imread(path)
        if bgr is None:
            raise IOError(f"cannot read image {path!r}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        rows = []
        for name, model, cfg in models:
            small = cv2.resize(rgb, (cfg.data.width, cfg.data.height))
            target = torch.tensor([pid]) if a.true_class else None
            cams, _ = part_gradcam(model, to_tensor(rgb, cfg), target, method=a.method)
            shifted, _ = part_gradcam(model, to_tensor(shift_box(rgb, a.shift), cfg), target,
                                      method=a.method)
            c0, c1 = vertical_centroids(cams)[0], vertical_centroids(shifted)[0]
            s = stats.setdefault(name, {"ordered": 0, "ordered_shifted": 0, "follow": 0, "rho": 0.0,
                                        "n": 0, "K": cams.shape[1]})
            s["n"] += 1
            s["ordered"] += int(centroids_ordered(cams, a.tolerance)[0])
            s["ordered_shifted"] += int(centroids_ordered(shifted, a.tolerance)[0])
            s["rho"] += float(centroid_rank_correlation(cams)[0])
            # the person moved up by `shift`: most parts' centroids should move up too
            s["follow"] += int(((c0 - c1) > 0.25 * a.shift).float().mean() >= 0.5)
            tiles = [small] + [overlay(small, c.numpy()) for c in cams[0]]
            rows.append(labelled_row(name, tiles, a.scale))
        if n < a.fig8:
            cv2.imwrite(osp.join(a.out_dir, f"fig8_{n:03d}.png"),
                        cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
        if n < a.grid_num:
            grid_blocks.append(rows[-1])
    if grid_blocks:
        cv2.imwrite(osp.join(a.out_dir, "fig9_grid.png"),
                    cv2.cvtColor(grid(grid_blocks, a.grid_cols), cv2.COLOR_RGB2BGR))
    report = {k: {"images": v["n"], "parts": v["K"], "share_ordered": v["ordered"] / v["n"],
                  "share_ordered_shifted": v["ordered_shifted"] / v["n"],
                  "mean_rank_correlation": v["rho"] / v["n"],
                  "share_following_shift": v["follow"] / v["n"]} for k, v in stats.items()}
    report["_protocol"] = {"split": a.split if not a.images else "files",
                           "true_class": a.true_class, "method": a.method,
                           "shift": a.shift, "tolerance": a.tolerance, "seed": a.seed}
    write_json(osp.join(a.out_dir, "centroids.json"), report)
    print(f"| model | images | K centroids top-to-bottom (tol. {a.tolerance:g}) "
          f"| same after box shift | Spearman(k, centroid) | maps follow a {a.shift:g} shift |")
    print("|---|---|---|---|---|---|")
    for k, v in report.items():
        if not k.startswith("_"):
            print(f"| {k} | {v['images']} | {v['share_ordered']:.0%} "
                  f"| {v['share_ordered_shifted']:.0%} | {v['mean_rank_correlation']:.2f} "
                  f"| {v['share_following_shift']:.0%} |")
    return report


if __name__ == "__main__":
    main()
