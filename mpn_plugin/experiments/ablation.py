"""The paper's ablations in miniature on the synthetic benchmark (Tables 1-4, Fig. 7, Fig. 10),
plus torchreid's own ``pcb_p6`` and ``osnet_x1_0``: same data, seeds, budget and test protocol
for every run; Markdown tables of Rank-1 / mAP (mean +- std over seeds).

Resumable: every run writes ``<log-dir>/<run>/seed<k>/results.json``; runs that have it are
not retrained, so the set can be spread over sessions (``--max-runs``). A finished run started
with another training than the one planned (other ``--epochs``, ``--flip``, a config changed
since) is refused, not reused: pass another ``--log-dir`` (``--report-only`` warns). The synthetic
generator is frozen: its config hash and the hash of its source file are recorded below, in
every table, and checked before any new run (the benchmark must not be tuned to the method).

Examples::

    python tools/run_ablation.py --list
    python tools/run_ablation.py --groups table1 --seeds 1 2 3 --out docs/ablation.md
    python tools/run_ablation.py --groups table2 fig7 --max-runs 4     # resume later
    python tools/run_ablation.py --report-only --out docs/ablation.md
    python tools/run_ablation.py --groups table1 --runs baseline mpn --ide-epochs 12   # Sec. 5.1
    mpn-experiments ablation --report-only      # the same, installed

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
import os.path as osp
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..data import synthetic
from .runner import (
    ROOT,
    PlannedRun,
    headline,
    last_checkpoint,
    load_results,
    mean_std,
    refuse_changed,
    run_training,
    train_command,
    train_missing,
    write_text,
)

# Frozen before the first ablation run (2026-11-25): SyntheticConfig() defaults and the
# generator's source. Changing either makes the tool refuse new runs (--allow-unfrozen).
# Source re-frozen 2026-12-02 (e595aa6af94fef38 -> 75fa3607d12a877e): the optional gt_bbox/
# folder (multi-query) was added; with the default gt_bbox_per_id_cam=0 every generated file is
# byte-identical to the earlier generator's (checked file by file; only generator.json's timing
# field differs), and both config hashes are unchanged.
# Re-frozen 2026-12-02 (75fa3607d12a877e -> 29448641a21954c0): only the progress bar's import
# changed (throttled in logs); all 10,269 generated images, maps and CSVs are byte-identical (sha256
# of every file compared against the earlier generator's output).
FROZEN_CONFIG_HASH = "0ebb8f811a50693f"
FROZEN_CONFIG_HASH_ERROR_FREE = "952553d48df208bd"
FROZEN_SOURCE_SHA256 = "29448641a21954c0"


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
          ("mpn.sharing.conv1", "False", "mpn.loss.soft_sharing_layer", "conv1",
           "mpn.loss.soft_sharing_weight", str(w))) for w in (0.01, 0.1, 1, 10)],
    Run("hard_conv1", "fig10", "hard sharing conv1 (MPN)", _abl("mpn"), same_as="mpn"),
]
GROUPS = {"table1": "Table 1: components", "table2": "Table 2: coarse priors",
          "table3_4": "Tables 3-4: feature space alignment", "fig7": "Fig. 7: number of parts K",
          "fig10": "Fig. 10: soft vs hard parameter sharing (first 1x1 conv)"}

#: Stage 1 of the two-stage protocol (--ide-epochs): not a table row of its own.
IDE_RUN = Run("ide", "table1", "IDE (torchreid resnet18, softmax): stage 1 of MPN-family runs",
              "configs/ide_synthetic.yaml", torchreid=True)
IDE_RUN_ERROR_FREE = Run("ide_error_free", "table1", "IDE on error-free boxes: stage 1 of the UB",
                         "configs/ide_synthetic.yaml", torchreid=True, data="error_free")
IDE_RUNS = (IDE_RUN, IDE_RUN_ERROR_FREE)


def source_sha256() -> str:
    """The first 16 hex digits of the sha256 of the synthetic generator's source file."""
    with open(synthetic.__file__, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def check_frozen(allow: bool) -> Dict[str, str]:
    """The generator's config hashes and source hash, with ``frozen``: yes or NO.

    Raises:
        SystemExit: the generator changed since it was frozen and ``allow`` is False.
    """
    got = {"config": synthetic.config_hash(synthetic.SyntheticConfig()),
           "source": source_sha256(),
           "config_error_free": synthetic.config_hash(
               synthetic.SyntheticConfig(error_free_boxes=True))}
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


def data_root_of(root: str, kind: str) -> str:
    """The folder of the dataset ``kind`` (``default`` or ``error_free`` boxes) under ``root``."""
    return root if kind == "default" else osp.join(root, "error_free")


def prepare_data(root: str, kind: str, py: str) -> str:
    """Generate the dataset (default or error-free boxes) and its priors; returns its root
    (:func:`data_root_of`)."""
    data_root = data_root_of(root, kind)
    extra = ["--error-free-boxes"] if kind == "error_free" else []
    subprocess.run([py, "tools/make_synthetic_dataset.py", "--root", data_root, *extra],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([py, "tools/generate_priors.py", "--dataset", "synthetic_pedestrians",
                    "--root", data_root, "--adapter", "synthetic", "--height", "128",
                    "--width", "64"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return data_root


def ide_run_for(run: Run) -> Run:
    """The stage-1 run on the same data as ``run`` (Baseline (UB): error-free boxes)."""
    return IDE_RUN_ERROR_FREE if run.data == "error_free" else IDE_RUN


def run_log_dir(run: Run, args) -> str:
    """Where a run's results live: MPN-family runs of the IDE protocol in their own folder."""
    if args.ide_epochs and (not run.torchreid or run in IDE_RUNS):
        return f"{args.log_dir}_ide{args.ide_epochs}"
    return args.log_dir


def result_path(log_dir: str, run: Run, seed: int) -> str:
    """``<log_dir>/<run>/seed<k>/results.json`` (a row that reuses another: that one's)."""
    return osp.join(log_dir, run.same_as or run.name, f"seed{seed}", "results.json")


def save_dir_of(run: Run, seed: int, args) -> str:
    """The folder of ``run``'s training with ``seed``."""
    return osp.dirname(result_path(run_log_dir(run, args), run, seed))


def command_of(run: Run, seed: int, args, data_root: str) -> List[str]:
    """The training command of ``run`` with ``seed`` on the data in ``data_root`` (from its
    stage-1 IDE model with ``--ide-epochs``)."""
    opts = [*run.opts, "test.flip", str(args.flip)]
    if run in IDE_RUNS:
        opts += ["train.max_epoch", str(args.ide_epochs)]
    elif args.epochs:
        opts += ["train.max_epoch", str(args.epochs)]
    if args.ide_epochs and not run.torchreid:
        opts += ["mpn.init_weights",
                 last_checkpoint(save_dir_of(ide_run_for(run), seed, args), args.ide_epochs)]
    return train_command(run.config, seed, save_dir_of(run, seed, args), root=data_root,
                         opts=opts)


def train(run: Run, seed: int, args, data_root: str) -> None:
    """Train ``run`` with ``seed`` on the data in ``data_root`` (:func:`command_of`)."""
    run_training(command_of(run, seed, args, data_root), save_dir_of(run, seed, args),
                 f"[ablation] {run.name} seed {seed}")


def load(run: Run, seed: int, args) -> Optional[dict]:
    """``{"rank1", "mAP"}`` (percent) and ``wall`` (s) of a finished run, else None."""
    res = load_results(save_dir_of(run, seed, args))
    if res is None:
        return None
    r = headline(res)
    return {"rank1": 100 * r["rank1"], "mAP": 100 * r["mAP"], "wall": res["wall_time_s"]}


def plan(runs: List[Run], seeds_for, args) -> List[PlannedRun]:
    """Every training ``runs`` need, in order: with ``--ide-epochs`` the stage-1 IDE run of a
    seed before that seed's MPN-family runs; a row that reuses another (``same_as``) and a
    stage 1 shared by several rows, once; each with its command (its data under ``--root``)."""
    planned, seen = [], set()

    def add(run, seed):
        if (run.name, seed) not in seen:
            seen.add((run.name, seed))
            protocol = "scratch" if run_log_dir(run, args) == args.log_dir else "two_stage"
            command = command_of(run, seed, args, data_root_of(args.root, run.data))
            planned.append(PlannedRun(protocol, run.name, seed, save_dir_of(run, seed, args),
                                      command))

    for r in runs:
        for s in seeds_for(r):
            if args.ide_epochs and not r.torchreid:
                add(ide_run_for(r), s)                     # stage 1 before the seed's runs
            add(next((x for x in RUNS if x.name == r.same_as), r), s)
    return planned


def ide_note(args) -> str:
    if not args.ide_epochs:
        return ""
    return (f"; two-stage protocol (Sec. 5.1): every MPN-family run's backbone starts from the "
            f"IDE model of its seed (torchreid resnet18, softmax, {args.ide_epochs} epochs, "
            "`configs/ide_synthetic.yaml`); torchreid's models train from scratch as always")


def report(runs: List[Run], seeds_for, frozen: Dict[str, str], args) -> str:
    """The Markdown tables of ``runs``: one per group, Rank-1 / mAP mean ± std over seeds."""
    epochs = f", max_epoch {args.epochs} for all" if args.epochs else ""
    lines = [f"Synthetic benchmark: generator config hash `{frozen['config']}` (error-free boxes "
             f"`{frozen['config_error_free']}`), generator source sha256 `{frozen['source']}`, "
             f"frozen: {frozen['frozen']}. Recipe: each config's own (demo: ResNet-18 from "
             f"scratch, 128x64, 12 epochs){epochs}{ide_note(args)}; "
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
                         f"(of {len(got)}) | {mean_std([v['rank1'] for v in done.values()])} | "
                         f"{mean_std([v['mAP'] for v in done.values()])} | "
                         f"{statistics.mean(walls):.1f} |" if walls else
                         f"| {r.label} | - (of {len(got)}) | - | - | - |")
        lines.append("")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the ablations (``tools/run_ablation.py``, ``mpn-experiments ablation``)."""
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
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tools/run_ablation.py``.

    Examples::

        >>> args = build_parser().parse_args(["--groups", "table1", "--seeds", "1"])
    """
    return add_arguments(argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args, argv: List[str]) -> str:
    """Train the missing runs of ``args`` (unless ``--report-only``) and return the tables;
    ``argv`` is quoted in the header of ``--out``."""
    runs = [r for r in RUNS if r.group in args.groups and (not args.runs or r.name in args.runs)]

    def seeds_for(run):
        return args.seeds if run.group == "table1" else args.other_seeds

    if args.list:
        for r in runs:
            print(f"{r.group:9s} {r.name:24s} {r.config} {' '.join(r.opts)}  seeds {seeds_for(r)}")
        return ""
    frozen = check_frozen(args.allow_unfrozen)
    planned = plan(runs, seeds_for, args)
    refuse_changed(planned, args.log_dir, args.report_only, tag="ablation")
    if not args.report_only:
        by_name = {r.name: r for r in (*RUNS, *IDE_RUNS)}
        roots = {}

        def start(planned: PlannedRun) -> None:
            r = by_name[planned.name]
            if r.data not in roots:
                roots[r.data] = prepare_data(args.root, r.data, sys.executable)
            train(r, planned.seed, args, roots[r.data])

        train_missing(planned, start, args.max_runs, tag="ablation",
                      desc="ablation runs")
    table = report(runs, seeds_for, frozen, args)
    print(table)
    if args.out:
        write_text(args.out, f"# Ablations on the synthetic benchmark\n\nWritten by `python "
                   f"tools/run_ablation.py {' '.join(argv)}` on {time.strftime('%Y-%m-%d')}."
                   f"\n\n{table}\n")
    return table


def main(argv: Optional[List[str]] = None) -> str:
    """``tools/run_ablation.py``: see the module docstring.

    Examples::

        >>> table = main(["--report-only", "--groups", "fig7"])
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    return run(build_parser().parse_args(argv), argv)
