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

Every MPN-family run also evaluates its final model with each test-time readout
(``test.extra_readouts``: ``mt``, the paper's, and ``at_uniform`` / ``concat``, beyond the
paper); rows then carry ``readouts``: readout -> {"rank1", "mAP"}.

Probes (``--probes FILE``): a list of config changes, run one after another over the seeds,
resumable, one JSON row per run (``protocol: probe``, ``model``: the probe's name) with all
readouts. The file is YAML or JSON, a list of::

    - name: mt_only_full_lr_mean      # unique; the row's "model" and its log folder
      model: mpn                      # a key of MODELS (its config in --config-dir)
      opts: [mpn.tasks, mt_only, mpn.loss.id_reduction, mean]   # config overrides
      ide: false                      # true: start from this seed's IDE checkpoint (Sec. 5.1)

``ide: true`` runs use the IDE stage of the paper's protocol (the softmax model trained for
``--ide-epochs``, once per seed and dataset, shared by every such probe); their wall time and
epochs include it, and the IDE's own Rank-1 / mAP is a row (``model: ide``).

Examples::

    python tools/run_real_crops.py --config-dir configs/cuhk01 --seeds 1 2 3 \
        --out docs/real_crops.json --table docs/real_crops.md
    python tools/run_real_crops.py --report-only --out docs/real_crops.json --table -
    python tools/run_real_crops.py --probes configs/probes/real_crops_causes.yaml --seeds 1 \
        --dataset cuhk01_jitter --root data/cuhk01_jitter --out docs/probes.json --table -
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

#: the readouts every MPN-family run reports (test.extra_readouts)
READOUT_OPTS = ["test.extra_readouts", "['mt', 'at_uniform', 'concat']"]

#: model name -> config file name in --config-dir: the one recipe of each model, the same on
#: every dataset (``mpn_paper_protocol``: stage 2 of the paper's protocol, for probes with
#: ``ide: true``; not a default). The Baseline's CUHK01-best recipe (``baseline_plain``: no
#: staged lr, no neck) is gone: its ID loss stayed at chance for 5 of 9 epochs on a held-out
#: set (issue 29); rows of it in old JSON files are still tabulated.
MODELS = {"softmax": "softmax_mobilenetv2.yaml", "baseline": "baseline_mobilenetv2.yaml",
          "mpn": "mpn_mobilenetv2.yaml", "mpn_paper_protocol": "mpn_paper_protocol.yaml"}
DEFAULT_MODELS = ["softmax", "baseline", "mpn"]
PROTOCOLS = ("imagenet", "two_stage")


def run_dir(args, protocol: str, model: str, seed: int) -> str:
    return osp.join(args.log_dir, protocol, model, f"seed{seed}")


def ran(cmd: List[str], save_dir: str) -> str:
    """The command a finished run was started with (its ``command.txt``), else ``cmd``."""
    path = osp.join(save_dir, "command.txt")
    if osp.isfile(path):
        with open(path) as f:
            return f.read().strip()
    return shlex.join(cmd)


def load(path: str) -> Optional[dict]:
    path = osp.join(path, "results.json")
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def command(args, model: str, seed: int, save_dir: str, extra=()) -> List[str]:
    cfg = osp.join(args.config_dir, MODELS[model])
    readouts = READOUT_OPTS if model != "softmax" else []
    return [sys.executable, "tools/train.py", "--config-file", cfg, *(
        ["--root", args.root] if args.root else []), "train.seed", str(seed),
        "data.save_dir", save_dir, *readouts, *extra]


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


def record(args, runs, include_ide: bool = False) -> List[Dict]:
    """One row per finished run of ``runs`` ((protocol, model, seed, command, save_dir,
    stage-1 save_dir or None)); a run from a stage-1 checkpoint counts that stage's epochs and
    wall time, and its command is both commands joined by ``&&``. The IDE stage is a row of
    its own only with ``include_ide``."""
    rows = []
    for protocol, model, seed, cmd, save_dir, stage1 in runs:
        res = load(save_dir)
        if res is None or (model == "ide" and not include_ide):
            continue
        r = next(iter(res["results"].values()))
        epochs, wall = len(res["loss_history"]), res["wall_time_s"]
        full_cmd = ran(cmd, save_dir)
        if stage1:
            ide = load(stage1)
            epochs, wall = epochs + len(ide["loss_history"]), wall + ide["wall_time_s"]
            full_cmd = ran([], stage1) + " && " + full_cmd
        rows.append({"dataset": args.dataset, "model": model, "protocol": protocol,
                     "seed": seed, "rank1": round(100 * r["rank1"], 2),
                     "mAP": round(100 * r["mAP"], 2), "epochs": epochs,
                     "wall_s": round(wall, 1), "command": full_cmd, **readout_scores(res)})
    return rows


def readout_scores(res: dict) -> dict:
    """``{"readouts": {readout: {"rank1", "mAP"}}}`` (percent) of a results.json that has
    them, else ``{}``."""
    if not res.get("readouts"):
        return {}
    return {"readouts": {k: {m: round(100 * next(iter(v.values()))[m], 2) for m in ("rank1", "mAP")}
                         for k, v in res["readouts"].items() if v}}


def load_probes(path: str) -> List[dict]:
    """The probe list of ``path`` (YAML or JSON), checked.

    Raises:
        ValueError: naming the file, the entry and the fix.
    """
    import yaml
    if not osp.isfile(path):
        raise FileNotFoundError(f"--probes {path}: no such file")
    with open(path, encoding="utf-8") as f:
        probes = yaml.safe_load(f)
    if not isinstance(probes, list):
        raise ValueError(f"--probes {path}: expected a list of {{name, model, opts, ide}} "
                         f"entries, got {type(probes).__name__}")
    seen = set()
    for i, p in enumerate(probes):
        where = f"--probes {path}, entry {i + 1}"
        if not isinstance(p, dict) or not p.get("name"):
            raise ValueError(f"{where}: each entry needs a 'name' (got {p!r})")
        unknown = set(p) - {"name", "model", "opts", "ide"}
        if unknown:
            raise ValueError(f"{where} ({p['name']}): unknown keys {sorted(unknown)}; use name, "
                             "model, opts, ide")
        if p["name"] in seen or p["name"] == "ide":
            raise ValueError(f"{where}: the name '{p['name']}' is used twice or reserved")
        seen.add(p["name"])
        p.setdefault("model", "mpn")
        p.setdefault("opts", [])
        p.setdefault("ide", False)
        if p["model"] not in MODELS:
            raise ValueError(f"{where} ({p['name']}): model '{p['model']}' is not one of "
                             f"{sorted(MODELS)}")
        if not isinstance(p["opts"], list) or len(p["opts"]) % 2:
            raise ValueError(f"{where} ({p['name']}): opts must be a list of key, value pairs")
        p["opts"] = [str(v) for v in p["opts"]]
    return probes


def probe_plan(args, probes) -> list:
    """("probe", name, seed, command, save_dir, IDE save_dir or None) of every probe run (the
    layout of :func:`plan`); the IDE stage of a seed comes first when a probe needs it."""
    runs = []
    for seed in args.seeds:
        ide_dir = osp.join(args.log_dir, "probes", args.dataset, "ide", f"seed{seed}")
        if any(p["ide"] for p in probes):
            runs.append(("probe", "ide", seed,
                         command(args, "softmax", seed, ide_dir,
                                 ["train.max_epoch", str(args.ide_epochs)]), ide_dir, None))
        for p in probes:
            save_dir = osp.join(args.log_dir, "probes", args.dataset, p["name"], f"seed{seed}")
            extra = list(p["opts"])
            if p["ide"]:
                extra += ["model.pretrained", "False", "mpn.init_weights",
                          last_checkpoint(ide_dir, args.ide_epochs)]
            runs.append(("probe", p["name"], seed,
                         command(args, p["model"], seed, save_dir, extra), save_dir,
                         ide_dir if p["ide"] else None))
    return runs


def probe_table(rows: List[Dict]) -> str:
    """Markdown: one line per (dataset, probe), mean over seeds, with every readout."""
    def fmt(v):
        return (f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1
                else f"{v[0]:.1f}" if v else "–")
    lines = ["| dataset | probe | seeds | Rank-1 | mAP | mAP, readout mt / at_uniform / "
             "concat | epochs | wall / run (min) |", "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["dataset"], r["model"]) for r in rows
                              if r["protocol"] == "probe"))
    for dataset, name in keys:
        sel = [r for r in rows if (r["dataset"], r["model"], r["protocol"]) ==
               (dataset, name, "probe")]
        ro = " / ".join(fmt([r["readouts"][k]["mAP"] for r in sel
                             if k in r.get("readouts", {})])
                        for k in ("mt", "at_uniform", "concat"))
        lines.append(f"| {dataset} | {name} | {','.join(str(r['seed']) for r in sel)} | "
                     f"{fmt([r['rank1'] for r in sel])} | {fmt([r['mAP'] for r in sel])} | "
                     f"{ro} | {sel[0]['epochs']} | "
                     f"{statistics.mean(r['wall_s'] for r in sel) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def table(rows: List[Dict]) -> str:
    def fmt(v):
        return (f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1
                else f"{v[0]:.1f}")
    lines = ["| protocol | model | seeds | Rank-1 (%) | mAP (%) | epochs | wall / run (min) |",
             "|---|---|---|---|---|---|---|"]
    order = list(MODELS)
    rows = [r for r in rows if r["protocol"] in PROTOCOLS]       # probe rows: probe_table
    keys = sorted({(r["protocol"], r["model"]) for r in rows},
                  key=lambda k: (PROTOCOLS.index(k[0]),
                                 order.index(k[1]) if k[1] in order else len(order), k[1]))
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
    p.add_argument("--probes", default="", help="YAML/JSON list of config changes to run "
                   "instead of --models/--protocols (see the module docstring)")
    p.add_argument("--out", default="", help="the JSON list of runs")
    p.add_argument("--table", default="", help="Markdown table file ('-' = print only)")
    args = p.parse_args(argv)
    args.two_stage_epochs = {k: int(v) for k, v in (s.split("=") for s in args.two_stage_epochs)}
    for model in MODELS:
        args.two_stage_epochs.setdefault(model, 0)
    if args.probes:
        runs, tabulate = probe_plan(args, load_probes(args.probes)), probe_table
    else:
        runs, tabulate = plan(args), table
    if not args.report_only:
        train_missing(args, runs)
    rows = record(args, runs, include_ide=bool(args.probes))
    if args.out:
        rows = merge(args.out, rows)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    text = tabulate(rows) if rows else "(no finished runs)\n"
    print(text)
    if args.table and args.table != "-":
        with open(args.table, "w") as f:
            f.write(text)
    return rows


def train_missing(args, runs) -> None:
    """Train, one after another, the runs that have no results yet (at most ``--max-runs``)."""
    todo = [r for r in runs if load(r[4]) is None]
    if args.max_runs:
        todo = todo[:args.max_runs]
    from mpn_plugin.progress import progress_bar as tqdm  # throttled without a terminal
    for protocol, model, seed, cmd, save_dir, _ in tqdm(todo, desc="runs", disable=None):
        t = time.time()
        train(cmd, save_dir)
        res = load(save_dir)
        r = next(iter(res["results"].values()))
        readouts = "".join(f" | {k} {v['mAP']:.1f}"
                           for k, v in readout_scores(res).get("readouts", {}).items())
        print(f"[runs] {args.dataset} {protocol} {model} seed {seed}: Rank-1 "
              f"{100 * r['rank1']:.1f} mAP {100 * r['mAP']:.1f}{readouts} "
              f"({(time.time() - t) / 60:.1f} min)", flush=True)


if __name__ == "__main__":
    main()
