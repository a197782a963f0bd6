"""A quality report of a prior cache: Markdown + PNG figures + a CSV of the fallback images.

The report (``<out>/report.md``) gives the fallback fraction and why (no head, no legs, tool
failure... as recorded by ``tools/generate_priors.py``), the distribution of the body's top and
bottom boundary and of the person-mask area (``boundaries.png``, ``mask_area.png``), and two
contact sheets drawn by ``tools/visualize_priors.py``: random images (``random.png``) and the
worst cases (``worst.png``: fallbacks, then the priors with the smallest masks). Every
fallback image is listed with its reason in ``fallbacks.csv``.

Examples::

    python tools/priors_report.py --cache data/synthetic_pedestrians/priors_synthetic_16x8.npz \\
        --out docs/priors_report
    # numbers only (no image crops in the report, e.g. for research-use datasets)
    python tools/priors_report.py --cache data/cuhk01/priors_mediapipe_8x4.npz --out /tmp/r \\
        --no-contact-sheets
"""
from __future__ import annotations

import argparse
import csv
import os
import os.path as osp
from collections import Counter
from typing import Dict, List

import cv2
import numpy as np

from . import cache as cache_mod
from .visualize import make_grid

UNKNOWN = "unknown"  # a fallback whose reason was not recorded (older cache, resumed run)
# order of the worst-cases sheet and of the reasons table: tool failures first
REASON_ORDER = ("tool_error", "no_tool_output", "no_detection", "no_head_no_legs", "no_head",
                "no_legs", "empty_mask", UNKNOWN)
REASON_TEXT = {
    "tool_error": "the tool raised an error on the image",
    "no_tool_output": "no tool output for the image (missing label / mask / keypoint file)",
    "no_detection": "the tool ran but found no person (e.g. no pose)",
    "no_head_no_legs": "neither head nor legs found",
    "no_head": "no head found",
    "no_legs": "no legs found (neither side)",
    "empty_mask": "head and legs found, but the person mask is empty at feature size",
    UNKNOWN: "not recorded (cache made before reasons were stored, or by a resumed run)",
}
PERCENTILES = (5, 25, 50, 75, 95)


def fallback_reasons(cache) -> Dict[str, str]:
    """relpath -> reason category (``REASON_ORDER``) for every fallback image of the cache."""
    recorded = cache.header.get("fallback_reasons", {}) or {}
    out = {}
    for rel in cache.relpaths():
        if cache.get(rel).case == "fallback":
            reason = recorded.get(rel, UNKNOWN).split(":", 1)[0]
            out[rel] = reason if reason in REASON_ORDER else UNKNOWN
    return out


def prior_statistics(cache) -> Dict:
    """Per-image arrays of the priors (fallbacks excluded): top, bottom, mask area (share of the
    image covered by the stage-1 mask) and feature-mask area; plus the fallback reasons."""
    rels, top, bottom, area, feat_area = [], [], [], [], []
    for rel in cache.relpaths():
        rec = cache.get(rel)
        if rec.case == "fallback":
            continue
        rels.append(rel)
        top.append(rec.top)
        bottom.append(rec.bottom)
        area.append(float(rec.mask_image.mean()) if rec.mask_image is not None else 1.0)
        feat_area.append(float(rec.mask.mean()))
    return {"relpaths": rels, "top": np.array(top), "bottom": np.array(bottom),
            "area": np.array(area), "feature_area": np.array(feat_area),
            "reasons": fallback_reasons(cache)}


def worst_cases(stats: Dict, num: int) -> List[str]:
    """Up to ``num`` images for the worst-cases sheet: half fallbacks, taking each reason in
    turn (in ``REASON_ORDER``) so every reason is shown, then the priors with the smallest
    person masks."""
    groups = [sorted(r for r, why in stats["reasons"].items() if why == reason)
              for reason in REASON_ORDER]
    fallbacks = [g[i] for i in range(max(map(len, groups), default=0))
                 for g in groups if i < len(g)]
    order = np.argsort(stats["area"], kind="stable")
    smallest = [stats["relpaths"][i] for i in order]
    n_fb = min(len(fallbacks), max(num // 2, num - len(smallest)))
    return fallbacks[:n_fb] + smallest[:num - n_fb]


def _percentile_row(name: str, values: np.ndarray) -> str:
    if not len(values):
        return f"| {name} | " + " | ".join("-" for _ in PERCENTILES) + " | - |"
    cells = " | ".join(f"{np.percentile(values, p):.3f}" for p in PERCENTILES)
    return f"| {name} | {cells} | {values.mean():.3f} |"


def _histograms(path: str, series, xlabel: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    bins = np.linspace(0, 1, 41)
    for label, values in series:
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_report(cache_path: str, out_dir: str, image_root: str = "", num: int = 24,
                 num_parts: int = 6, seed: int = 0, contact_sheets: bool = True,
                 sheet_scale: float = 1.0) -> Dict:
    """Write the report of ``cache_path`` into ``out_dir``; return its numbers.

    Args:
        cache_path (str): a cache of ``tools/generate_priors.py``.
        out_dir (str): created if needed; gets report.md, boundaries.png, mask_area.png,
            fallbacks.csv and (``contact_sheets``) random.png, worst.png.
        image_root (str): the folder the cache's keys are relative to (default: its header).
        num (int): images per contact sheet.
        sheet_scale (float): resize factor of the contact sheets (0.5 halves their size).

    Examples::

        >>> numbers = build_report("data/synthetic_pedestrians/priors_synthetic_16x8.npz", "out")
        >>> numbers["fallback_fraction"]
    """
    cache = cache_mod.PriorCache.load(cache_path)
    root = image_root or cache.header.get("dataset_dir", "")
    os.makedirs(out_dir, exist_ok=True)
    stats = prior_statistics(cache)
    n, reasons = len(cache), stats["reasons"]
    counts = Counter(reasons.values())
    numbers = {"images": n, "fallbacks": len(reasons),
               "fallback_fraction": len(reasons) / n if n else 0.0,
               "reasons": {r: counts.get(r, 0) for r in REASON_ORDER if counts.get(r, 0)},
               "top_median": float(np.median(stats["top"])) if len(stats["top"]) else None,
               "bottom_median": float(np.median(stats["bottom"])) if len(stats["bottom"]) else None,
               "area_median": float(np.median(stats["area"])) if len(stats["area"]) else None}

    with open(osp.join(out_dir, "fallbacks.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["relpath", "reason", "detail"])
        recorded = cache.header.get("fallback_reasons", {}) or {}
        for rel, reason in sorted(reasons.items()):
            detail = recorded.get(rel, "")
            w.writerow([rel, reason, detail.split(":", 1)[1].strip() if ":" in detail else ""])
    _histograms(osp.join(out_dir, "boundaries.png"),
                [("top", stats["top"]), ("bottom", stats["bottom"])],
                "ROI boundary (fraction of the image height, 0 = top)",
                "Body top and bottom boundary (priors only)")
    _histograms(osp.join(out_dir, "mask_area.png"),
                [("image mask", stats["area"]), ("feature-size M", stats["feature_area"])],
                "share of the image covered by the person mask", "Person-mask area (priors only)")
    worst = worst_cases(stats, num)
    if contact_sheets and n:
        for name, rels in (("random", None), ("worst", worst)):
            grid = make_grid(cache, root, num, num_parts, cols=6, seed=seed, relpaths=rels)
            if sheet_scale != 1.0:
                grid = cv2.resize(grid, None, fx=sheet_scale, fy=sheet_scale,
                                  interpolation=cv2.INTER_AREA)
            cv2.imwrite(osp.join(out_dir, f"{name}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    h = cache.header
    # paths below the current folder shown relative to it (readable in committed reports)
    command = (h.get("command") or "(command not recorded)").replace(os.getcwd() + os.sep, "")
    lines = [f"# Prior cache report: `{osp.basename(cache_path)}`", "",
             f"Tool `{h.get('tool')}` (version {h.get('tool_version')}), feature size "
             f"{h.get('feature_size')}, {n} images; made with:", "",
             f"    {command}", "",
             "## Fallbacks", "",
             f"**{len(reasons)} of {n} images ({numbers['fallback_fraction']:.1%}) got the "
             f"fallback prior** (M = all ones, ROI = the whole image: uniform division). Why:", "",
             "| reason | images | share of all | meaning |", "|---|---|---|---|"]
    for r in REASON_ORDER:
        if counts.get(r):
            lines.append(f"| `{r}` | {counts[r]} | {counts[r] / n:.1%} | {REASON_TEXT[r]} |")
    lines += ["", "Every fallback image with its reason: [fallbacks.csv](fallbacks.csv).", "",
              "## Body boundaries and mask area (priors only)", "",
              "| value | " + " | ".join(f"p{p}" for p in PERCENTILES) + " | mean |",
              "|---" * (len(PERCENTILES) + 2) + "|",
              _percentile_row("top boundary", stats["top"]),
              _percentile_row("bottom boundary", stats["bottom"]),
              _percentile_row("ROI height (bottom - top)", stats["bottom"] - stats["top"]),
              _percentile_row("mask area (image)", stats["area"]),
              _percentile_row("mask area (feature-size M)", stats["feature_area"]), "",
              "Boundaries are fractions of the image height (0 = top); areas are shares of the "
              "image.", "", "![boundaries](boundaries.png)", "", "![mask area](mask_area.png)", ""]
    if contact_sheets and n:
        lines += ["## Contact sheets", "",
                  "Each image: the crop | person mask (red) with M at feature size (yellow dots) "
                  f"and the ROI (green lines) | the {num_parts} part strips within the ROI; a red "
                  "frame marks a fallback.", "", f"Random {min(num, n)} images (seed {seed}):", "",
                  "![random](random.png)", "",
                  "Worst cases: fallbacks first (tool failures, then missing head and legs), then "
                  "the priors with the smallest person masks:", "", "![worst](worst.png)", "",
                  "In order: " + ", ".join(f"`{r}`" + (f" ({reasons[r]})" if r in reasons else "")
                                           for r in worst), ""]
    with open(osp.join(out_dir, "report.md"), "w") as f:
        f.write("\n".join(lines))
    return numbers


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/priors_report.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cache", required=True, help="a cache written by tools/generate_priors.py")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", default="", help="image root (default: the cache's dataset dir)")
    p.add_argument("--num", type=int, default=24, help="images per contact sheet")
    p.add_argument("--num-parts", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sheet-scale", type=float, default=1.0,
                   help="resize factor of the contact sheets (e.g. 0.5 for committed docs)")
    p.add_argument("--no-contact-sheets", action="store_true",
                   help="numbers and histograms only (no image crops)")
    return p


def main(argv=None):
    """Run ``tools/priors_report.py`` with ``argv`` (flags: :func:`build_parser`)."""
    a = build_parser().parse_args(argv)
    numbers = build_report(a.cache, a.out, a.images, a.num, a.num_parts, a.seed,
                           contact_sheets=not a.no_contact_sheets, sheet_scale=a.sheet_scale)
    print(f"wrote {osp.join(a.out, 'report.md')}: {numbers}")
    return numbers


if __name__ == "__main__":
    main()
