"""Do the main tasks of trained MPN models select part-relevant channels (Sec. 3.1, 3.3)?

For each model (``NAME=CONFIG:CHECKPOINT``), on the query images of its config's first target
dataset (``--num`` of them):

* the (K, K) matrix of :mod:`mpn_plugin.evaluation.part_selectivity`: row k = where (which
  uniform strip j of F) the whole-map GMP of head k's first layer picks its channel maxima. A
  part-selective MPN puts row k on column k; rows that all look alike mean that the K test
  features are K global features;
* its summaries: mean diagonal share (chance 1/K), the heads' mean strips (head 1 -> K) and
  their span (K - 1 if part-selective, ~0 if all heads pick alike), Spearman of k with the
  mean strip (a rank statistic: a faint but monotone ordering already gives 1);
* with ``--trunk``, also Rank-1 / mAP of the model's own test feature and of GAP(F), the trunk
  alone without heads (query vs gallery, the model's test protocol): how much the heads add.

Writes ``part_selectivity.md``, ``part_selectivity.json`` and ``part_selectivity.png`` (one
heat map per model) to ``--out-dir``, and prints the table. Models without main tasks (the
Baseline) get the trunk columns only.

Examples::

    C=configs/cuhk01 L=log/cuhk01
    python tools/part_selectivity.py --trunk --out-dir docs/part_selectivity \\
        --model MPN=$C/mpn_mobilenetv2.yaml:$L/mpn_mobilenetv2/model/model.pth.tar-6 \\
        --model Baseline=$C/baseline_mobilenetv2.yaml:$L/baseline_mobilenetv2/model/model.pth.tar-8
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shlex
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from ..build import load_model_spec
from ..evaluation.part_selectivity import feature_saturation, part_selectivity, trunk_features
from ..evaluation.robustness import ReidModel, load_split
from ..file_io import write_json, write_text


def trunk_scores(m: ReidModel, query, gallery):
    """((Rank-1, mAP) of the model's test feature, (Rank-1, mAP) of GAP(F))."""
    def gap(split):
        return torch.cat([trunk_features(m.model, x).float().cpu()
                          for x in m.input_batches(split.paths)])
    model_scores = m.evaluate(m.features(query.paths), m.features(gallery.paths), query, gallery)
    return model_scores, m.evaluate(gap(query), gap(gallery), query, gallery)


def measure(spec: str, args) -> dict:
    name, model, cfg = load_model_spec(spec, args.root, args.opts)
    m = ReidModel(name, model, cfg)
    query, gallery = load_split(cfg.data.targets[0], cfg.data.root)
    row = {"model": name, "spec": spec, "dataset": cfg.data.targets[0],
           "images": min(args.num, len(query))}
    if getattr(model, "main_heads", None) is not None:
        sel = part_selectivity(model, m.input_batches(query.paths[:args.num], desc=name))
        row.update({k: (v.tolist() if torch.is_tensor(v) else v) for k, v in sel.items()})
    if args.saturation:
        sat = feature_saturation(model, m.input_batches(query.paths[:args.num], desc=name),
                                 args.saturation)
        row.update({f"saturation_{k}": v for k, v in sat.items()})
    if args.trunk:
        (r1, mAP), (tr1, tmAP) = trunk_scores(m, query, gallery)
        row.update(rank1=r1, mAP=mAP, trunk_rank1=tr1, trunk_mAP=tmAP)
    return row


def markdown(rows) -> str:
    def pct(r, key):
        return f"{100 * r[key]:.1f}" if key in r else "–"
    lines = ["| model | F | maxima | diagonal share (chance) | mean strip, head 1 -> K (span; "
             "ideal K-1) | Spearman(k, mean strip) | Rank-1 / mAP | trunk GAP(F) Rank-1 / mAP |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "matrix" in r:
            size, maxima = "x".join(map(str, r["feature_size"])), r["maxima"]
            rho = f"{r['spearman']:.2f}"
            share = f"{r['diagonal']:.2f} ({r['chance_diagonal']:.2f})"
            strips = (" ".join(f"{v:.1f}" for v in r["mean_strip"]) +
                      f" ({r['span']:.2f}; {len(r['mean_strip']) - 1})")
        else:
            size = maxima = rho = strips = "–"
            share = "no main task"
        lines.append(f"| {r['model']} | {size} | {maxima} | {share} | {strips} | {rho} | "
                     f"{pct(r, 'rank1')} / {pct(r, 'mAP')} | "
                     f"{pct(r, 'trunk_rank1')} / {pct(r, 'trunk_mAP')} |")
    if any("saturation_overall" in r for r in rows):
        lines += ["", "Share of F's entries at the clip value (MobileNetV2's ReLU6: 6.0), overall "
                  "and at the positions the heads' GMP picks (mean over the picked maxima):", "",
                  "| model | clip | all of F | at MT maxima | at AT maxima (uniform strips) |",
                  "|---|---|---|---|---|"]
        for r in rows:
            if "saturation_overall" in r:
                lines.append(f"| {r['model']} | {r['saturation_clip']:g} | "
                             f"{pct(r, 'saturation_overall')}% | {pct(r, 'saturation_mt')}% | "
                             f"{pct(r, 'saturation_at')}% |")
    for r in rows:
        if "matrix" not in r:
            continue
        K = len(r["matrix"])
        lines += ["", f"{r['model']}: share of head k's channel maxima in strip j "
                  f"(chance per strip: {', '.join(f'{c:.2f}' for c in r['chance'])})", "",
                  "| head \\ strip | " + " | ".join(str(j + 1) for j in range(K)) + " |",
                  "|---|" + "---|" * K]
        lines += [f"| {k + 1} | " + " | ".join(f"{v:.2f}" for v in row) + " |"
                  for k, row in enumerate(r["matrix"])]
    return "\n".join(lines) + "\n"


def figure(rows, path: str) -> None:
    rows = [r for r in rows if "matrix" in r]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    axes[0][0].set_ylabel("MT head k")
    for ax, r in zip(axes[0], rows):
        K = len(r["matrix"])
        im = ax.imshow(r["matrix"], vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(K), [str(j + 1) for j in range(K)])
        ax.set_yticks(range(K), [str(k + 1) for k in range(K)])
        ax.set_xlabel("strip of F holding the max")
        ax.set_title(f"{r['model']}\ndiag {r['diagonal']:.2f} (chance {r['chance_diagonal']:.2f})",
                     fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of head k's maxima")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/part_selectivity.py``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT")
    p.add_argument("--root", default="", help="data.root override")
    p.add_argument("--num", type=int, default=1000, help="query images for the matrix")
    p.add_argument("--trunk", action="store_true",
                   help="also Rank-1/mAP of the model and of its trunk alone (GAP of F)")
    p.add_argument("--saturation", type=float, nargs="?", const=6.0, default=0.0,
                   help="also the share of F's entries at this clip value (default 6.0, "
                        "MobileNetV2's ReLU6), overall and at the heads' GMP maxima")
    p.add_argument("--out-dir", default="", help="write the .md, .json and .png here")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return p


def main(argv=None):
    """Run ``tools/part_selectivity.py`` with ``argv`` (flags: :func:`build_parser`)."""
    args = build_parser().parse_args(argv)
    rows = [measure(spec, args) for spec in args.model]
    command = " ".join(shlex.quote(a) for a in ["python", "tools/part_selectivity.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    text = f"Made with\n\n```bash\n{command}\n```\n\n" + markdown(rows)
    print(text)
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
        write_text(osp.join(args.out_dir, "part_selectivity.md"), text)
        write_json(osp.join(args.out_dir, "part_selectivity.json"), rows, indent=1)
        figure(rows, osp.join(args.out_dir, "part_selectivity.png"))
    return rows


if __name__ == "__main__":
    main()
