#!/usr/bin/env python
"""The paper's ablations in miniature on the synthetic benchmark (Tables 1-4, Fig. 7, Fig. 10),
plus torchreid's own ``pcb_p6`` and ``osnet_x1_0``: same data, seeds, budget and test protocol
for every run; Markdown tables of Rank-1 / mAP (mean +- std over seeds).

Resumable: every run writes ``<log-dir>/<run>/seed<k>/results.json``; runs that have it are
not retrained, so the set can be spread over sessions (``--max-runs``). The synthetic
generator is frozen: its config hash and the hash of its source file are recorded below, in
every table, and checked before any new run (the benchmark must not be tuned to the method).

Examples::

    python tools/run_ablation.py --list
    python tools/run_ablation.py --groups table1 --seeds 1 2 3 --out docs/ablation.md
    python tools/run_ablation.py --groups table2 fig7 --max-runs 4     # resume later
    python tools/run_ablation.py --report-only --out docs/ablation.md
    python tools/run_ablation.py --groups table1 --runs baseline mpn --ide-epochs 12   # Sec. 5.1

``--ide-epochs N`` follows the paper's two-stage protocol (Sec. 5.1): for every seed an IDE
model (torchreid ``resnet18``, softmax engine, ``configs/ide_synthetic.yaml``, N epochs, same
seed) is trained first and initialises the backbone of every MPN-family run of that seed
(``mpn.init_weights``). Those runs go to ``<log-dir>_ide<N>``; torchreid's own models
(``pcb_p6``, ``osnet_x1_0``) are not affected and keep their results in ``<log-dir>``. The
IDE models' own Rank-1 / mAP are reported as an extra Table 1 row; Baseline (UB) gets its
own IDE model, trained on the error-free boxes.

Budget: the demo recipe (ResNet-18, 128x64, 12 epochs, batch 48); measured on 2 cores about
6.5 min per MPN run (the other MPN variants and the Baseline within ~10% per batch), so the 30
MPN-family runs of Table 1 (3 seeds) take ~3.5 h, pcb_p6 16 min per run (ResNet-50), the IDE
stage of --ide-epochs 12 about 4 min per seed, and the other groups (1 seed, 15 new runs)
~1.7 h: spread over sessions with --max-runs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

# Frozen before the first ablation run (2026-11-25): SyntheticConfig() defaults and the
# generator's source. Changing either makes the tool refuse new runs (--allow-unfrozen).
# Source re-frozen 2026-12-02 (e595aa6af94fef38 -> 75fa3607d12a877e): the optional gt_bbox/
# folder (multi-query) was added; with the default gt_bbox_per_id_cam=0 every generated file is
# byte-identical to the earlier generator's (checked file by file; only generator.json's timing
# field differs), and both config hashes are unchanged.
# Re-frozen 2026-12-02 (75fa3607d12a877e -> 29448641a21954c0): only the progress bar's import changed
# (throttled in logs); all 10,269 generated images, maps and CSVs are byte-identical (sha256
# of every file compared against the earlier generator's output).
FROZEN_CONFIG_HASH = "0ebb8f811a50693f"
FROZEN_CONFIG_HASH_ERROR_FREE = "952553d48df208bd"
FROZEN_SOURCE_SHA256 = "29448641a21954c0"
GENERATOR_SOURCE = osp.join(ROOT, "mpn_plugin", "data", "synthetic.py")


@dataclass
class Run:
    """One ablation row: a config plus overrides, in a table."""
    name: str
    group: str
    label: str
    config: str
    opts: Tuple[str, ...] = ()
    data: str = "default"            # default | error_free
    same_as: str = ""                # the same training as another row: its results are reused
    torchreid: bool = False          # torchreid's own model: no MPN init (--ide-epochs)


def _abl(name):
    return f"configs/ablation/{name}.yaml"


RUNS: List[Run] = [
    # Table 1: components
    Run("baseline", "table1", "Baseline", _abl("baseline")),
    Run("baseline_ub", "table1", "Baseline (UB, error-free boxes)", _abl("baseline_ub"),
        data="error_free"),
    Run("mt_only", "table1", "MT Only", _abl("mt_only")),
    Run("naive_mtl", "table1", "Naive MTL", _abl("naive_mtl")),
    Run("c1_s", "table1", "C1-S", _abl("c1_s")),
    Run("c2_s", "table1", "C2-S", _abl("c2_s")),
    Run("c1_s_c2_s", "table1", "C1-S + C2-S", _abl("c1_s_c2_s")),
    Run("fsa_alone", "table1", "FSA alone", _abl("fsa_alone")),
    Run("mpn_o", "table1", "MPN°", _abl("mpn_o")),
    Run("mpn", "table1", "MPN", _abl("mpn")),
    Run("pcb_p6", "table1", "torchreid pcb_p6 (softmax engine)", "configs/pcb_p6_synthetic.yaml",
        torchreid=True),
    Run("osnet_x1_0", "table1", "torchreid osnet_x1_0 (softmax engine)",
        "configs/osnet_x1_0_synthetic.yaml", torchreid=True),
    # Table 2: priors
    Run("prior_full", "table2", "mask + ROI resize (MPN)", _abl("mpn"), same_as="mpn"),
    Run("prior_roi_resize", "table2", "ROI resize only", _abl("prior_roi_resize")),
    Run("prior_uniform", "table2", "uniform division", _abl("prior_uniform")),
    # Tables 3-4: feature space alignment
    Run("align_class_wise", "table3_4", "class-wise (Eq. 8, MPN)", _abl("mpn"), same_as="mpn"),
    Run("align_sample_wise", "table3_4", "sample-wise", _abl("mpn"),
        ("mpn.loss.alignment", "sample_wise")),
    Run("align_batch_wise", "table3_4", "batch-wise", _abl("mpn"),
        ("mpn.loss.alignment", "batch_wise")),
    Run("align_triplet_h_plus_g", "table3_4", "triplet on h and g ('sample-wise [10]')",
        _abl("mpn"), ("mpn.loss.alignment", "none", "mpn.loss.triplet_input", "h_plus_g")),
    Run("align_none", "table3_4", "none (PSA only)", _abl("mpn"), ("mpn.loss.alignment", "none")),
    # Fig. 7: number of parts K
    *[Run(f"k{k}", "fig7", f"K = {k}", _abl("mpn"), ("mpn.num_parts", str(k)))
      for k in (1, 2, 4, 8)],
    Run("k6", "fig7", "K = 6 (MPN)", _abl("mpn"), same_as="mpn"),
    # Fig. 10: soft parameter sharing of the first 1x1 conv, by penalty weight
    *[Run(f"soft_conv1_{w}", "fig10", f"soft sharing conv1, weight {w}", _abl("mpn"),
          ("mpn.share_conv1", "False", "mpn.loss.soft_sharing_layer", "conv1",
           "mpn.loss.soft_sharing_weight", str(w))) for w in (0.01, 0.1, 1, 10)],
    Run("hard_conv1", "fig10", "hard sharing conv1 (MPN)", _abl("mpn"), same_as="mpn"),
]
GROUPS = {"table1": "Table 1: components", "table2": "Table 2: coarse priors",
          "table3_4": "Tables 3-4: feature space alignment", "fig7": "Fig. 7: number of parts K",
          "fig10": "Fig. 10: soft vs hard parameter sharing (first 1x1 conv)"}


def source_sha256() -> str:
    with open(GENERATOR_SOURCE, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def check_frozen(allow: bool) -> Dict[str, str]:
    from mpn_plugin.data.synthetic import SyntheticConfig, config_hash
    got = {"config": config_hash(SyntheticConfig()), "source": source_sha256(),
           "config_error_free": config_hash(SyntheticConfig(error_free_boxes=True))}
    want = {"config": FROZEN_CONFIG_HASH, "source": FROZEN_SOURCE_SHA256,
            "config_error_free": FROZEN_CONFIG_HASH_ERROR_FREE}
    diff = [k for k in got if got[k] != want[k]]
    if diff and not allow:
        raise SystemExit(f"[ablation] the synthetic generator changed since it was frozen "
                         f"({', '.join(f'{k}: {want[k]} -> {got[k]}' for k in diff)}): results "
                         "would not be comparable. Restore it, or pass --allow-unfrozen (the "
                         "tables will say so).")
    got["frozen"] = "yes" if not diff else "NO (--allow-unfrozen)"
    return got


def prepare_data(root: str, kind: str, py: str) -> str:
    """Generate the dataset (default or error-free boxes) and its priors; returns its root."""
    data_root = root if kind == "default" else osp.join(root, "error_free")
    extra = ["--error-free-boxes"] if kind == "error_free" else []
    subprocess.run([py, "tools/make_synthetic_dataset.py", "--root", data_root, *extra],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([py, "tools/generate_priors.py", "--dataset", "synthetic_pedestrians",
                    "--root", data_root, "--adapter", "synthetic", "--height", "128",
                    "--width", "64"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return data_root


#: Stage 1 of the two-stage protocol (--ide-epochs): not a table row of its own.
IDE_RUN = Run("ide", "table1", "IDE (torchreid resnet18, softmax): stage 1 of MPN-family runs",
              "configs/ide_synthetic.yaml", torchreid=True)
IDE_RUN_ERROR_FREE = Run("ide_error_free", "table1", "IDE on error-free boxes: stage 1 of the UB",
                         "configs/ide_synthetic.yaml", torchreid=True, data="error_free")
IDE_RUNS = (IDE_RUN, IDE_RUN_ERROR_FREE)


def ide_run_for(run: Run) -> Run:
    """The stage-1 run on the same data as ``run`` (Baseline (UB): error-free boxes)."""
    return IDE_RUN_ERROR_FREE if run.data == "error_free" else IDE_RUN


def run_log_dir(run: Run, args) -> str:
    """Where a run's results live: MPN-family runs of the IDE protocol in their own folder."""
    if args.ide_epochs and (not run.torchreid or run in IDE_RUNS):
        return f"{args.log_dir}_ide{args.ide_epochs}"
    return args.log_dir


def result_path(log_dir: str, run: Run, seed: int) -> str:
    return osp.join(log_dir, run.same_as or run.name, f"seed{seed}", "results.json")


def ide_checkpoint(run: Run, seed: int, args) -> str:
    """The stage-1 IDE checkpoint for ``run`` and ``seed`` (torchreid's name for the last
    epoch)."""
    ide = ide_run_for(run)
    save_dir = osp.dirname(result_path(run_log_dir(ide, args), ide, seed))
    return osp.join(save_dir, "model", f"model.pth.tar-{args.ide_epochs}")


def train(run: Run, seed: int, args, data_root: str) -> None:
    save_dir = osp.dirname(result_path(run_log_dir(run, args), run, seed))
    cmd = [sys.executable, "tools/train.py", "--config-file", run.config, "--root", data_root,
           *run.opts, "train.seed", str(seed), "data.save_dir", save_dir,
           "test.flip", str(args.flip)]
    if run in IDE_RUNS:
        cmd += ["train.max_epoch", str(args.ide_epochs)]
    elif args.epochs:
        cmd += ["train.max_epoch", str(args.epochs)]
    if args.ide_epochs and not run.torchreid:
        cmd += ["mpn.init_weights", ide_checkpoint(run, seed, args)]
    os.makedirs(save_dir, exist_ok=True)
    with open(osp.join(save_dir, "stdout.txt"), "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"[ablation] {run.name} seed {seed} failed (exit {proc.returncode}); "
                           f"see {osp.join(save_dir, 'stdout.txt')}")


def load(run: Run, seed: int, args):
    path = result_path(run_log_dir(run, args), run, seed)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        res = json.load(f)
    r = next(iter(res["results"].values()))
    return {"rank1": 100 * r["rank1"], "mAP": 100 * r["mAP"], "wall": res["wall_time_s"]}


def fmt(values: List[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def ide_note(args) -> str:
    if not args.ide_epochs:
        return ""
    return (f"; two-stage protocol (Sec. 5.1): every MPN-family run's backbone starts from the "
            f"IDE model of its seed (torchreid resnet18, softmax, {args.ide_epochs} epochs, "
            "`configs/ide_synthetic.yaml`); torchreid's models train from scratch as always")


def report(runs: List[Run], seeds_for, frozen: Dict[str, str], args) -> str:
    lines = [f"Synthetic benchmark: generator config hash `{frozen['config']}` (error-free boxes "
             f"`{frozen['config_error_free']}`), generator source sha256 `{frozen['source']}`, "
             f"frozen: {frozen['frozen']}. Recipe: each config's own (demo: ResNet-18 from "
             f"scratch, 128x64, 12 epochs){f', max_epoch {args.epochs} for all' if args.epochs else ''}"
             f"{ide_note(args)}; "
             f"test flip {'on' if args.flip else 'off'} for all; cosine distance. "
             "Mean ± sample std over the seeds listed.", ""]
    for group, title in GROUPS.items():
        rows = [r for r in runs if r.group == group]
        if not rows:
            continue
        if group == "table1" and args.ide_epochs:
            rows = [IDE_RUN] + rows
            if any(r.data == "error_free" and not r.torchreid for r in rows):
                rows.insert(1, IDE_RUN_ERROR_FREE)
        lines += [f"### {title}", "", "| run | seeds | Rank-1 (%) | mAP (%) | wall / run (min) |",
                  "|---|---|---|---|---|"]
        for r in rows:
            got = {s: load(r, s, args) for s in seeds_for(r)}
            done = {s: v for s, v in got.items() if v}
            walls = [v["wall"] / 60 for v in done.values()]
            lines.append(f"| {r.label} | {','.join(map(str, done)) or '-'} "
                         f"(of {len(got)}) | {fmt([v['rank1'] for v in done.values()])} | "
                         f"{fmt([v['mAP'] for v in done.values()])} | "
                         f"{statistics.mean(walls):.1f} |" if walls else
                         f"| {r.label} | - (of {len(got)}) | - | - | - |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    p.add_argument("--runs", nargs="+", default=None, help="only these run names")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3],
                   help="seeds of the Table 1 rows")
    p.add_argument("--other-seeds", nargs="+", type=int, default=[1],
                   help="seeds of the other groups")
    p.add_argument("--epochs", type=int, default=0, help="max_epoch for every run (0: config's)")
    p.add_argument("--flip", action="store_true", help="flip test for every run")
    p.add_argument("--root", default="data")
    p.add_argument("--log-dir", default="log/ablation_runs")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--list", action="store_true")
    p.add_argument("--allow-unfrozen", action="store_true")
    p.add_argument("--ide-epochs", type=int, default=0,
                   help="two-stage protocol of Sec. 5.1: IDE model of N epochs per seed first")
    p.add_argument("--out", default="", help="write the Markdown tables here")
    args = p.parse_args(argv)
    runs = [r for r in RUNS if r.group in args.groups and (not args.runs or r.name in args.runs)]

    def seeds_for(run):
        return args.seeds if run.group == "table1" else args.other_seeds

    if args.list:
        for r in runs:
            print(f"{r.group:9s} {r.name:24s} {r.config} {' '.join(r.opts)}  seeds {seeds_for(r)}")
        return ""
    frozen = check_frozen(args.allow_unfrozen)
    if not args.report_only:
        todo, seen = [], set()
        for r in runs:
            for s in seeds_for(r):
                ide = ide_run_for(r)
                if args.ide_epochs and not r.torchreid and (ide.name, s) not in seen:
                    seen.add((ide.name, s))                    # stage 1 before the seed's runs
                    if load(ide, s, args) is None:
                        todo.append((ide, s))
                key = (r.same_as or r.name, s)
                if key not in seen and load(r, s, args) is None:
                    seen.add(key)
                    todo.append((next((x for x in RUNS if x.name == r.same_as), r), s))
        if args.max_runs:
            todo = todo[:args.max_runs]
        roots = {}
        from mpn_plugin.progress import progress_bar as tqdm  # throttled without a terminal
        for r, s in tqdm(todo, desc="ablation runs", disable=None):
            if r.data not in roots:
                roots[r.data] = prepare_data(args.root, r.data, sys.executable)
            t = time.time()
            train(r, s, args, roots[r.data])
            res = load(r, s, args)
            print(f"[ablation] {r.name} seed {s}: Rank-1 {res['rank1']:.1f} mAP {res['mAP']:.1f} "
                  f"({(time.time() - t) / 60:.1f} min)", flush=True)
    table = report(runs, seeds_for, frozen, args)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Ablations on the synthetic benchmark\n\nWritten by `python tools/"
                    f"run_ablation.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
                    f"on {time.strftime('%Y-%m-%d')}.\n\n{table}\n")
    return table


if __name__ == "__main__":
    main()
