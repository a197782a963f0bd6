"""Robustness sweep: Rank-1 / mAP of trained models as their queries are shifted, rescaled,
cut or occluded by a controlled amount (the gallery stays clean), and per-part distances.

For each model (``NAME=CONFIG:CHECKPOINT``: MPN, its Baseline, torchreid models such as
``resnet18`` or ``ide_mobilenetv2``), on the query / gallery sets of the first model's first
target dataset (``--dataset`` to choose another):

* every perturbation of ``--perturbations`` at every amount (``--levels NAME=a,b,c`` to change
  them) is applied to the query crops (``mpn_plugin/evaluation/perturbations.py``: fills,
  the BIPO-style occluder and the other conventions are documented there), and Rank-1 / mAP are
  measured with the model's own test protocol (``mpn_plugin/evaluation/robustness.py``);
* for part-based models (MPN family, PCB) the mean per-part cosine distance of matching
  query-gallery pairs, as the perturbation grows.

Writes to ``--out-dir``: ``robustness.json`` (every point, with the clean scores),
``robustness_<perturbation>.png`` (mAP vs amount, one line per model, clean score marked),
``part_distances_<perturbation>.png`` and ``robustness.md`` (mAP retained at 30% occlusion /
20% shift, also printed).

``--explain QUERY_INDEX GALLERY_INDEX`` instead writes ``explain_q<Q>_g<G>.png`` / ``.json``:
the K per-part cosine distances of that pair for every part-based model (with
``--explain-perturbation NAME=AMOUNT``, also for the perturbed query).

Examples::

    L=log/ablation
    python tools/robustness_sweep.py --root data \\
        --model MPN=configs/ablation/mpn.yaml:$L/mpn/model/model.pth.tar-12 \\
        --model Baseline=configs/ablation/baseline.yaml:$L/baseline/model/model.pth.tar-12 \\
        --model IDE=configs/ide_synthetic.yaml:log/ide_synthetic/model/model.pth.tar-12 \\
        --out-dir docs/robustness
    python tools/robustness_sweep.py --root data --model MPN=... --model Baseline=... \\
        --explain 0 5 --explain-perturbation occlusion_person=0.3 --out-dir docs/robustness
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ..build import load_model_spec
from ..evaluation.perturbations import MEAN_FILL, perturbations
from ..evaluation.robustness import ReidModel, explain_pair, load_split, run_sweep, summary_markdown
from ..file_io import write_json, write_text


def parse_levels(items, registry):
    """``["shift=-0.2,0,0.2", ...]`` -> {name: [amounts]}."""
    out = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or name not in registry:
            raise ValueError(f"--levels {item!r}: expected NAME=a,b,c with NAME one of "
                             f"{sorted(registry)}, e.g. --levels shift=-0.2,0,0.2")
        out[name] = [float(v) for v in values.split(",") if v.strip()]
    return out


def plot_sweep(results, registry, out_dir):
    """One PNG per perturbation: mAP vs amount, a line per model, its clean score dotted + star."""
    paths = []
    points, models = results["points"], list(results["models"])
    for name in dict.fromkeys(p["perturbation"] for p in points):
        pert = registry[name]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for i, model in enumerate(models):
            pts = sorted((p["level"], p["mAP"]) for p in points
                         if p["model"] == model and p["perturbation"] == name)
            clean = results["models"][model]["mAP"]
            color = f"C{i}"
            ax.plot([x for x, _ in pts], [100 * y for _, y in pts], "o-", color=color, label=model)
            ax.axhline(100 * clean, color=color, ls=":", lw=1)
            ax.plot([pert.clean_level], [100 * clean], "*", color=color, ms=12, mec="k", mew=0.5)
        ax.plot([], [], "k*:", label="clean score")
        ax.set_xlabel(pert.axis)
        ax.set_ylabel("mAP (%)")
        ax.set_title(f"{name}: perturbed queries, clean gallery", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(osp.join(out_dir, f"robustness_{name}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def plot_part_distances(results, registry, out_dir):
    """One PNG per perturbation: for each part-based model, the mean cosine distance of matching
    pairs of each part k (k = 1 at the top of the image) vs amount."""
    paths = []
    points = results["points"]
    models = [m for m, c in results["models"].items() if c["part_distances"] is not None]
    if not models:
        return paths
    for name in dict.fromkeys(p["perturbation"] for p in points):
        fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), sharey=True,
                                 squeeze=False)
        for ax, model in zip(axes[0], models):
            pts = sorted((p["level"], p["part_distances"]) for p in points
                         if p["model"] == model and p["perturbation"] == name)
            x, d = [level for level, _ in pts], np.array([v for _, v in pts])       # (levels, K)
            K = d.shape[1]
            for k in range(K):
                ax.plot(x, d[:, k], "o-", ms=3, color=plt.cm.viridis(k / max(K - 1, 1)),
                        label=f"part {k + 1}")
            ax.set_title(model, fontsize=10)
            ax.set_xlabel(registry[name].axis, fontsize=8)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("mean cosine distance,\nmatching pairs")
        axes[0][-1].legend(fontsize=7, title="k (1 = top)", title_fontsize=7)
        fig.suptitle(f"{name}: which parts break first", fontsize=10)
        fig.tight_layout()
        paths.append(osp.join(out_dir, f"part_distances_{name}.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def plot_explanation(expl, path):
    """The pair's crops and, per part-based model, the K per-part cosine distances as bars."""
    q_img, p_img, g_img = expl["images"]
    crops = [("query", q_img)] + ([("perturbed query", p_img)] if p_img is not None else []) \
        + [("gallery", g_img)]
    models = list(expl["models"])
    fig = plt.figure(figsize=(1.3 * len(crops) + 4.5, 3.4))
    grid = fig.add_gridspec(1, len(crops) + 3)
    for i, (title, img) in enumerate(crops):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(img)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[0, len(crops):])
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        row = expl["models"][name]
        k = np.arange(1, len(row["clean"]) + 1)
        x = k - 0.4 + width * (i + 0.5)
        ax.bar(x, row["clean"], width * (0.5 if row["perturbed"] else 0.9), color=f"C{i}",
               label=f"{name} (d={row['distance'][0]:.3f})")
        if row["perturbed"]:
            ax.bar(x + width * 0.45, row["perturbed"], width * 0.45, color=f"C{i}", alpha=0.5,
                   hatch="//", label=f"{name} perturbed (d={row['distance'][1]:.3f})")
        ax.set_xticks(k)
    q, g = expl["query"], expl["gallery"]
    same = "same identity" if q["pid"] == g["pid"] else "different identities"
    ax.set_xlabel("part k (1 = top)")
    ax.set_ylabel("1 - cos(q_k, g_k)")
    ax.set_title(f"query {q['index']} vs gallery {g['index']} ({same})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT")
    p.add_argument("--root", default="", help="dataset root (default: each config's data.root)")
    p.add_argument("--dataset", default="", help="default: the first model's first target")
    p.add_argument("--perturbations", nargs="+", default=list(perturbations()),
                   help="which perturbations to sweep")
    p.add_argument("--levels", action="append", default=[], metavar="NAME=a,b,c",
                   help="amounts of one perturbation (default: its Perturbation.levels)")
    p.add_argument("--rect-fill", default="mean", choices=["mean", "noise"],
                   help="rectangle occluder fill: ImageNet mean colour or uniform noise")
    p.add_argument("--num-queries", type=int, default=0,
                   help="evaluate a random subset of this many queries (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--explain", nargs=2, type=int, metavar=("QUERY_INDEX", "GALLERY_INDEX"),
                   help="only write the per-part distance figure of this pair")
    p.add_argument("--explain-perturbation", default="", metavar="NAME=AMOUNT",
                   help="with --explain: also the pair with the query perturbed")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default); restored at the end")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return p


def main(argv=None):
    a = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        return _run(a)
    finally:
        torch.set_num_threads(threads)


def _run(a):
    rect_fill = MEAN_FILL if a.rect_fill == "mean" else "noise"
    registry = perturbations(rect_fill)
    unknown = [n for n in a.perturbations if n not in registry]
    if unknown:
        raise ValueError(f"--perturbations {unknown}: choose from {sorted(registry)}")
    plan = {n: list(registry[n].levels) for n in a.perturbations}
    plan.update(parse_levels(a.levels, registry))
    os.makedirs(a.out_dir, exist_ok=True)
    torch.manual_seed(a.seed)
    specs = [load_model_spec(s, a.root, a.opts) for s in a.model]
    models = [ReidModel(name, model, cfg) for name, model, cfg in specs]
    cfg0 = specs[0][2]
    dataset = a.dataset or cfg0.data.targets[0]
    root = a.root or cfg0.data.root
    query, gallery = load_split(dataset, root)

    if a.explain:
        pert = None
        if a.explain_perturbation:
            name, _, amount = a.explain_perturbation.partition("=")
            if name not in registry or not amount:
                raise ValueError(f"--explain-perturbation {a.explain_perturbation!r}: expected "
                                 f"NAME=AMOUNT with NAME one of {sorted(registry)}")
            pert = (name, float(amount))
        expl = explain_pair(models, query, gallery, *a.explain, perturbation=pert, seed=a.seed,
                            rect_fill=rect_fill)
        stem = osp.join(a.out_dir, f"explain_q{a.explain[0]}_g{a.explain[1]}")
        plot_explanation(expl, stem + ".png")
        record = {k: v for k, v in expl.items() if k != "images"}
        record["dataset"] = dataset
        record["skipped"] = [m.name for m in models if m.name not in expl["models"]]
        write_json(stem + ".json", record)
        for name, row in expl["models"].items():
            print(f"{name}: per-part cosine distances "
                  + " ".join(f"{v:.3f}" for v in row["clean"])
                  + (" | perturbed " + " ".join(f"{v:.3f}" for v in row["perturbed"])
                     if row["perturbed"] else ""))
        if record["skipped"]:
            print(f"skipped (global feature, no parts): {', '.join(record['skipped'])}")
        print(f"wrote {stem}.png, {stem}.json")
        return record

    if a.num_queries and a.num_queries < len(query):
        rng = np.random.default_rng(a.seed)
        query = query.subset(np.sort(rng.choice(len(query), a.num_queries, replace=False)))
    results = run_sweep(models, query, gallery, plan, seed=a.seed, rect_fill=rect_fill,
                        progress=not a.no_progress)
    results["protocol"] = dict(
        dataset=dataset, root=root, num_query=len(query), num_gallery=len(gallery),
        seed=a.seed, levels=plan, shift_scale_fill=list(MEAN_FILL),
        rect_fill=list(MEAN_FILL) if rect_fill != "noise" else "noise",
        perturbations={n: registry[n].axis for n in plan},
        models={s.split("=", 1)[0]: s.split("=", 1)[1] for s in a.model}, opts=a.opts,
        perturbed="query only; gallery clean", part_distances="mean over matching pairs "
        "(same identity, other camera) of 1 - cos(q_k, g_k), k = 1 at the top")
    write_json(osp.join(a.out_dir, "robustness.json"), results)
    plot_sweep(results, registry, a.out_dir)
    plot_part_distances(results, registry, a.out_dir)
    text = (f"Robustness sweep on {dataset}: {len(query)} queries perturbed, {len(gallery)} "
            f"gallery images clean, seed {a.seed}.\n\n" + summary_markdown(results, registry))
    write_text(osp.join(a.out_dir, "robustness.md"), text)
    print(text)
    return results


if __name__ == "__main__":
    main()
