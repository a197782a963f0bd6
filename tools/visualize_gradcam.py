#!/usr/bin/env python
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
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mpn_plugin import compat  # noqa: E402
from mpn_plugin.train import build_model_from_cfg, build_parser, setup_cfg  # noqa: E402
from mpn_plugin.visualization.gradcam import centroids_ordered, part_gradcam, vertical_centroids  # noqa: E402


def load_model(spec: str, root: str):
    """``NAME=CONFIG:CHECKPOINT`` -> (name, model in eval mode, cfg)."""
    name, rest = spec.split("=", 1)
    config, ckpt = rest.rsplit(":", 1)
    cfg = setup_cfg(build_parser().parse_args(["--config-file", config] + (["--root", root] if root else [])))
    sd = compat.state_dict_of(compat.load_checkpoint(ckpt))
    w = next(v for k, v in sd.items() if k.endswith(("main_classifier.weight", "auxiliary_classifier.weight",
                                                      "classifier.0.weight")))
    num_classes = w.shape[-2]
    model = build_model_from_cfg(cfg, num_classes)
    compat.load_model_weights(model, ckpt)
    return name, model.eval(), cfg


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


def shift_box(img_rgb, dy_frac):
    """Simulate a detection error: move the box down by dy (the person moves up), edge fill."""
    H, W = img_rgb.shape[:2]
    M = np.float32([[1, 0, 0], [0, 1, -dy_frac * H]])
    return cv2.warpAffine(img_rgb, M, (W, H), borderMode=cv2.BORDER_REPLICATE)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT")
    p.add_argument("--root", default="")
    p.add_argument("--images", nargs="*", default=[])
    p.add_argument("--split", default="query", choices=["train", "query", "gallery"])
    p.add_argument("--num", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--true-class", action="store_true", help="explain the true identity (train split)")
    p.add_argument("--shift", type=float, default=0.15, help="box shift for the follow check")
    p.add_argument("--out-dir", required=True)
    a = p.parse_args(argv)
    os.makedirs(a.out_dir, exist_ok=True)
    models = [load_model(s, a.root) for s in a.model]
    items = load_images(a, models[0][2])
    stats, grid_rows = {}, []
    for n, (path, pid) in enumerate(items):
        rgb = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
        rows = []
        for name, model, cfg in models:
            small = cv2.resize(rgb, (cfg.data.width, cfg.data.height))
            target = torch.tensor([pid]) if (a.true_class and pid is not None) else None
            cams, _ = part_gradcam(model, to_tensor(rgb, cfg), target)
            shifted, _ = part_gradcam(model, to_tensor(shift_box(rgb, a.shift), cfg), target)
            c0, c1 = vertical_centroids(cams)[0], vertical_centroids(shifted)[0]
            s = stats.setdefault(name, {"ordered": 0, "ordered_shifted": 0, "follow": 0, "n": 0})
            s["n"] += 1
            s["ordered"] += int(centroids_ordered(cams)[0])
            s["ordered_shifted"] += int(centroids_ordered(shifted)[0])
            # the person moved up by `shift`: every part's centroid should move up too
            s["follow"] += int(((c0 - c1) > 0.25 * a.shift).float().mean() >= 0.5)
            rows.append(np.hstack([small] + [overlay(small, c.numpy()) for c in cams[0]]))
            if name == models[-1][0]:
                grid_rows.append(rows[-1])
        fig = np.vstack(rows)
        cv2.imwrite(osp.join(a.out_dir, f"fig8_{n:03d}.png"), cv2.cvtColor(fig, cv2.COLOR_RGB2BGR))
    grid = np.vstack(grid_rows)
    cv2.imwrite(osp.join(a.out_dir, "fig9_grid.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    report = {k: {"images": v["n"], "share_ordered": v["ordered"] / v["n"],
                  "share_ordered_shifted": v["ordered_shifted"] / v["n"],
                  "share_following_shift": v["follow"] / v["n"]} for k, v in stats.items()}
    with open(osp.join(a.out_dir, "centroids.json"), "w") as f:
        json.dump(report, f, indent=2)
    print("| model | images | K centroids top-to-bottom | same after box shift | maps follow the shift |")
    print("|---|---|---|---|---|")
    for k, v in report.items():
        print(f"| {k} | {v['images']} | {v['share_ordered']:.0%} | {v['share_ordered_shifted']:.0%} "
              f"| {v['share_following_shift']:.0%} |")
    return report


if __name__ == "__main__":
    main()
