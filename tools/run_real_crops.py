#!/usr/bin/env python
"""MPN vs its Baseline vs a plain softmax model on real crops, on the same ImageNet trunk, at
equal wall budget, over seeds, under two protocols; every run is written to a JSON list.

Protocols:

* ``imagenet``: ImageNet weights -> the model (MPN, Baseline) or the softmax model itself;
* ``two_stage``: the paper's (Sec. 5.1): ImageNet -> IDE (the softmax model, ``--ide-epochs``)
  -> MPN / Baseline from the IDE checkpoint (``mpn.init_weights``). The IDE stage is part of
  the run's budget: ``wall_s`` and ``epochs`` of a two-stage run include it.

The softmax model is the same under both protocols (it is its own stage 1), so it is trained
once per seed and listed under ``imagenet``.

Every run writes ``<log-dir>/<protocol>/<model>/seed<k>/results.json``; finished runs are
never retrained (resume by running the same command again). ``--out`` is a list of
``{"dataset", "model", "protocol", "seed", "rank1", "mAP", "epochs", "wall_s", "command"}``:
the finished runs of this ``--log-dir`` are merged into it, replacing rows with the same
dataset, model, protocol and seed and keeping every other row (runs of other log dirs, other
models, other seeds). ``--table`` writes the Markdown table (mean ± std) of the merged list.

Examples::

    python tools/run_real_crops.py --config-dir configs/cuhk01 --seeds 1 2 3 \
        --out docs/real_crops.json --table docs/real_crops.md
    python tools/run_real_crops.py --report-only --out docs/real_crops.json --table -
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: model name -> config file name in --config-dir (``baseline_plain``: the Baseline with its
#: own best single-seed recipe, without MPN's staged lr and classifier neck; not a default)
MODELS = {"softmax": "softmax_mobilenetv2.yaml", "baseline": "baseline_mobilenetv2.yaml",
          "mpn": "mpn_mobilenetv2.yaml", "baseline_plain": "baseline_plain_mobilenetv2.yaml"}
DEFAULT_MODELS = ["softmax", "baseline", "mpn"]
PROTOCOLS = ("imagenet", "two_stage")


def run_dir(args, protocol: str, model: str, seed: int) -> str:
    return osp.join(args.log_dir, protocol, model, f"seed{seed}")


def load(path: str) -> Optional[dict]:
    path = osp.join(path, "results.json")
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def command(args, model: str, seed: int, save_dir: str, extra=()) -> List[str]:
    cfg = osp.join(args.config_dir, MODELS[model])
    return [sys.executable, "tools/train.py", "--config-file", cfg, *(
        ["--root", args.root] if args.root else []), "train.seed", str(seed),
        "data.save_dir", save_dir, *extra]


def train(cmd: List[str], save_dir: str) -> None:
    os.makedirs(save_dir, exist_ok=True)
    with open(osp.join(save_dir, "command.txt"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    with open(osp.join(save_dir, "stdout.txt"), "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"[real crops] {shlex.join(cmd)} failed (exit {proc.returncode}); "
                           f"see {osp.join(save_dir, 'stdout.txt')}")


def last_checkpoint(save_dir: str, epochs: int) -> str:
    return osp.join(save_dir, "model", f"model.pth.tar-{epochs}")


def plan(args):
    """(protocol, model, seed, command, save_dir, stage-1 save_dir or None) of every run."""
    runs = []
    for seed in args.seeds:
        ide_dir = run_dir(args, "two_stage", "ide", seed)
        if "two_stage" in args.protocols and set(args.models) - {"softmax"}:
            runs.append(("two_stage", "ide", seed,
                         command(args, "softmax", seed, ide_dir,
                                 ["train.max_epoch", str(args.ide_epochs)]), ide_dir, None))
        for model in args.models:
            for protocol in args.protocols:
                if model == "softmax" and protocol == "two_stage":
                    continue                       # the softmax model is its own stage 1
                save_dir = run_dir(args, protocol, model, seed)
                extra = []
                if protocol == "two_stage":
                    extra = ["model.pretrained", "False", "mpn.init_weights",
                             last_checkpoint(ide_dir, args.ide_epochs),
                             "train.max_epoch", str(args.two_stage_epochs[model])]
                runs.append((protocol, model, seed, command(args, model, seed, save_dir, extra),
                             save_dir, ide_dir if protocol == "two_stage" else None))
    return runs


def record(args, runs) -> List[Dict]:
    rows = []
    for protocol, model, seed, cmd, save_dir, stage1 in runs:
        res = load(save_dir)
        if res is None or model == "ide":
            continue
        r = next(iter(res["results"].values()))
        epochs, wall = len(res["loss_history"]), res["wall_time_s"]
        full_cmd = shlex.join(cmd)
        if stage1:
            ide = load(stage1)
            epochs, wall = epochs + len(ide["loss_history"]), wall + ide["wall_time_s"]
            with open(osp.join(stage1, "command.txt")) as f:
                full_cmd = f.read().strip() + " && " + full_cmd
        rows.append({"dataset": args.dataset, "model": model, "protocol": protocol,
                     "seed": seed, "rank1": round(100 * r["rank1"], 2),
                     "mAP": round(100 * r["mAP"], 2), "epochs": epochs,
                     "wall_s": round(wall, 1), "command": full_cmd})
    return rows


def table(rows: List[Dict]) -> str:
    def fmt(v):
        return (f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1
                else f"{v[0]:.1f}")
    lines = ["| protocol | model | seeds | Rank-1 (%) | mAP (%) | epochs | wall / run (min) |",
             "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["protocol"], r["model"]) for r in rows},
                  key=lambda k: (PROTOCOLS.index(k[0]), list(MODELS).index(k[1])))
    for protocol, model in keys:
        sel = [r for r in rows if r["protocol"] == protocol and r["model"] == model]
        lines.append(f"| {protocol} | {model} | {','.join(str(r['seed']) for r in sel)} | "
                     f"{fmt([r['rank1'] for r in sel])} | {fmt([r['mAP'] for r in sel])} | "
                     f"{sel[0]['epochs']} | {statistics.mean(r['wall_s'] for r in sel) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def merge(path: str, rows: List[Dict]) -> List[Dict]:
    """The rows of the JSON list ``path`` (if it exists) with ``rows`` merged in: a row of
    ``rows`` replaces the one with the same dataset, model, protocol and seed, in place; new
    rows come at the end.

    Raises:
        ValueError: ``path`` is not a JSON list of run records (it is left untouched).
    """
    if not osp.isfile(path):
        return list(rows)
    try:
        with open(path) as f:
            kept = json.load(f)
        keys = [(r["dataset"], r["model"], r["protocol"], r["seed"]) for r in kept]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"--out {path}: not a JSON list of run records ({e!r}); it is left "
                         "untouched. Fix or move it, or pass another --out") from None
    new = {(r["dataset"], r["model"], r["protocol"], r["seed"]): r for r in rows}
    merged = [new.pop(k, r) for k, r in zip(keys, kept)]
    return merged + list(new.values())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-dir", default="configs/cuhk01")
    p.add_argument("--dataset", default="cuhk01", help="the name written to the JSON")
    p.add_argument("--root", default="", help="data.root override")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--ide-epochs", type=int, default=4, help="stage 1 of two_stage")
    p.add_argument("--two-stage-epochs", nargs="+", default=["baseline=4", "mpn=3"],
                   help="model=epochs of stage 2 (the IDE epochs come on top)")
    p.add_argument("--log-dir", default="log/real_crops")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--out", default="", help="the JSON list of runs")
    p.add_argument("--table", default="", help="Markdown table file ('-' = print only)")
    args = p.parse_args(argv)
    args.two_stage_epochs = {k: int(v) for k, v in (s.split("=") for s in args.two_stage_epochs)}
    for model in MODELS:
        args.two_stage_epochs.setdefault(model, 0)
    runs = plan(args)
    if not args.report_only:
        todo = [r for r in runs if load(r[4]) is None]
        if args.max_runs:
            todo = todo[:args.max_runs]
        from mpn_plugin.progress import progress_bar as tqdm  # throttled without a terminal
        for protocol, model, seed, cmd, save_dir, _ in tqdm(todo, desc="real-crop runs",
                                                            disable=None):
            t = time.time()
            train(cmd, save_dir)
            r = next(iter(load(save_dir)["results"].values()))
            print(f"[real crops] {protocol} {model} seed {seed}: Rank-1 {100 * r['rank1']:.1f} "
                  f"mAP {100 * r['mAP']:.1f} ({(time.time() - t) / 60:.1f} min)", flush=True)
    rows = record(args, runs)
    if args.out:
        rows = merge(args.out, rows)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    text = table(rows) if rows else "(no finished runs)\n"
    print(text)
    if args.table and args.table != "-":
        with open(args.table, "w") as f:
            f.write(text)
    return rows


if __name__ == "__main__":
    main()
