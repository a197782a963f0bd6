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
    mpn-experiments real-crops --report-only --out docs/real_crops.json --table -
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import shlex
import statistics
from typing import Dict, List, Optional

from .runner import (
    PlannedRun,
    last_checkpoint,
    mean_std,
    merge,
    record,
    refuse_changed,
    run_training,
    same_training,
    train_command,
    train_missing,
    write_text,
)

#: the readouts every MPN-family run reports (test.extra_readouts)
READOUT_OPTS = ["test.extra_readouts", "['mt', 'at_uniform', 'concat']"]

#: model name -> config file name in --config-dir: the one recipe of each model, the same on
#: every dataset (``mpn_paper_protocol`` / ``baseline_paper_protocol``: stage 2 of the paper's
#: protocol, for probes with ``ide: true``; not defaults). The Baseline's CUHK01-best recipe
#: (``baseline_plain``: no staged lr, no neck) is gone: its ID loss stayed at chance for 5 of 9
#: epochs on a held-out set (issue 29); rows of it in old JSON files are still tabulated.
MODELS = {"softmax": "softmax_mobilenetv2.yaml", "baseline": "baseline_mobilenetv2.yaml",
          "mpn": "mpn_mobilenetv2.yaml", "mpn_paper_protocol": "mpn_paper_protocol.yaml",
          "baseline_paper_protocol": "baseline_paper_protocol.yaml"}
DEFAULT_MODELS = ["softmax", "baseline", "mpn"]
PROTOCOLS = ("imagenet", "two_stage")


def command(args, model: str, seed: int, save_dir: str, extra=()) -> List[str]:
    """The training command of ``model`` (its config in ``--config-dir``) with ``seed``; every
    model but the softmax one reports every readout; ``extra``: overrides that come last."""
    readouts = READOUT_OPTS if model != "softmax" else []
    return train_command(osp.join(args.config_dir, MODELS[model]), seed, save_dir,
                         root=args.root, opts=[*readouts, *args.opts, *extra])


def ide_run(args, seed: int, ide_dir: str, protocol: str) -> PlannedRun:
    """Stage 1 of the paper's protocol: the softmax model for ``--ide-epochs``."""
    return PlannedRun(protocol, "ide", seed, ide_dir, command(
        args, "softmax", seed, ide_dir, ["train.max_epoch", str(args.ide_epochs)]))


def stage_two_opts(args, ide_dir: str) -> List[str]:
    """The overrides of a run that starts from the IDE checkpoint in ``ide_dir``."""
    return ["model.pretrained", "False", "mpn.init_weights",
            last_checkpoint(ide_dir, args.ide_epochs)]


def plan(args) -> List[PlannedRun]:
    """Every run of ``--models`` x ``--protocols`` x ``--seeds``, in training order: per seed,
    the IDE stage first (when a two-stage run needs it)."""
    runs = []
    for seed in args.seeds:
        ide_dir = osp.join(args.log_dir, "two_stage", "ide", f"seed{seed}")
        if "two_stage" in args.protocols and set(args.models) - {"softmax"}:
            runs.append(ide_run(args, seed, ide_dir, "two_stage"))
        for model in args.models:
            for protocol in args.protocols:
                if model == "softmax" and protocol == "two_stage":
                    continue                       # the softmax model is its own stage 1
                save_dir = osp.join(args.log_dir, protocol, model, f"seed{seed}")
                extra = []
                if protocol == "two_stage":
                    extra = [*stage_two_opts(args, ide_dir),
                             "train.max_epoch", str(args.two_stage_epochs[model])]
                runs.append(PlannedRun(protocol, model, seed, save_dir,
                                       command(args, model, seed, save_dir, extra),
                                       ide_dir if protocol == "two_stage" else None))
    return runs


def load_probes(path: str) -> List[dict]:
    """The probe list of ``path`` (YAML or JSON), checked.

    Raises:
        ValueError: naming the file, the entry and the fix.

    Examples::

        >>> probes = load_probes("configs/probes/real_crops_causes.yaml")
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


def probe_plan(args, probes) -> List[PlannedRun]:
    """Every probe run (protocol ``probe``, the probe's name) over ``--seeds``; the IDE stage
    of a seed comes first when a probe needs it. A probe that trains exactly the seed's IDE
    (the softmax model at ``--ide-epochs``: the same resolved config) is that run, trained
    once: its row reads the IDE's folder."""
    runs = []
    for seed in args.seeds:
        ide_dir = osp.join(args.log_dir, "probes", args.dataset, "ide", f"seed{seed}")
        ide = ide_run(args, seed, ide_dir, "probe") if any(p["ide"] for p in probes) else None
        runs += [ide] if ide else []
        for p in probes:
            save_dir = osp.join(args.log_dir, "probes", args.dataset, p["name"], f"seed{seed}")
            extra = [*p["opts"], *(stage_two_opts(args, ide_dir) if p["ide"] else [])]
            cmd = command(args, p["model"], seed, save_dir, extra)
            if ide and not p["ide"] and same_training(cmd, ide.command):
                save_dir, cmd = ide.save_dir, ide.command
            runs.append(PlannedRun("probe", p["name"], seed, save_dir, cmd,
                                   ide_dir if p["ide"] else None))
    return runs


def probe_table(rows: List[Dict]) -> str:
    """Markdown: one line per (dataset, probe), mean over seeds, with every readout."""
    lines = ["| dataset | probe | seeds | Rank-1 | mAP | mAP, readout mt / at_uniform / "
             "concat | epochs | wall / run (min) |", "|---|---|---|---|---|---|---|---|"]
    keys = list(dict.fromkeys((r["dataset"], r["model"]) for r in rows
                              if r["protocol"] == "probe"))
    for dataset, name in keys:
        sel = [r for r in rows if (r["dataset"], r["model"], r["protocol"]) ==
               (dataset, name, "probe")]
        ro = " / ".join(mean_std([r["readouts"][k]["mAP"] for r in sel
                                  if k in r.get("readouts", {})], empty="–")
                        for k in ("mt", "at_uniform", "concat"))
        lines.append(f"| {dataset} | {name} | {','.join(str(r['seed']) for r in sel)} | "
                     f"{mean_std([r['rank1'] for r in sel])} | "
                     f"{mean_std([r['mAP'] for r in sel])} | {ro} | {sel[0]['epochs']} | "
                     f"{statistics.mean(r['wall_s'] for r in sel) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def table(rows: List[Dict]) -> str:
    """Markdown: one line per (protocol, model), mean ± std over seeds; probe rows are left
    to :func:`probe_table`."""
    lines = ["| protocol | model | seeds | Rank-1 (%) | mAP (%) | epochs | wall / run (min) |",
             "|---|---|---|---|---|---|---|"]
    order = list(MODELS)
    rows = [r for r in rows if r["protocol"] in PROTOCOLS]
    keys = sorted({(r["protocol"], r["model"]) for r in rows},
                  key=lambda k: (PROTOCOLS.index(k[0]),
                                 order.index(k[1]) if k[1] in order else len(order), k[1]))
    for protocol, model in keys:
        sel = [r for r in rows if r["protocol"] == protocol and r["model"] == model]
        lines.append(f"| {protocol} | {model} | {','.join(str(r['seed']) for r in sel)} | "
                     f"{mean_std([r['rank1'] for r in sel])} | "
                     f"{mean_std([r['mAP'] for r in sel])} | {sel[0]['epochs']} | "
                     f"{statistics.mean(r['wall_s'] for r in sel) / 60:.1f} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of the real-crop comparisons (``tools/run_real_crops.py``,
    ``mpn-experiments real-crops``)."""
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
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="config overrides of every run, the IDE stage included (image size, "
                   "schedule), before each probe's own")
    p.add_argument("--max-runs", type=int, default=0, help="stop after this many new runs")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--probes", default="", help="YAML/JSON list of config changes to run "
                   "instead of --models/--protocols (see the module docstring)")
    p.add_argument("--out", default="", help="the JSON list of runs")
    p.add_argument("--table", default="", help="Markdown table file ('-' = print only)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tools/run_real_crops.py``.

    Examples::

        >>> args = build_parser().parse_args(["--seeds", "1", "--report-only"])
    """
    return add_arguments(argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter))


def run(args, argv: Optional[List[str]] = None) -> List[Dict]:
    """Train the missing runs of ``args`` (unless ``--report-only``), merge the finished ones
    into ``--out``, print (and write ``--table``) their table; returns the rows."""
    if len(args.opts) % 2:
        raise ValueError(f"--opts {' '.join(args.opts)}: expected KEY VALUE pairs")
    two_stage_epochs = {k: int(v) for k, v in (s.split("=") for s in args.two_stage_epochs)}
    args.two_stage_epochs = {**{model: 0 for model in MODELS}, **two_stage_epochs}
    if args.probes:
        runs, tabulate = probe_plan(args, load_probes(args.probes)), probe_table
    else:
        runs, tabulate = plan(args), table
    refuse_changed(runs, args.log_dir, args.report_only, tag="real crops")
    if not args.report_only:
        train_missing(runs, lambda r: run_training(r.command, r.save_dir,
                                                   f"[real crops] {shlex.join(r.command)}"),
                      args.max_runs, tag=f"runs {args.dataset}")
    rows = record(runs, args.dataset, include_ide=bool(args.probes))
    if args.out:
        rows = merge(args.out, rows)
        write_text(args.out, json.dumps(rows, indent=1))
    text = tabulate(rows) if rows else "(no finished runs)\n"
    print(text)
    if args.table and args.table != "-":
        write_text(args.table, text)
    return rows


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    """``tools/run_real_crops.py``: see the module docstring.

    Examples::

        >>> rows = main(["--report-only", "--out", "docs/real_crops.json", "--table", "-"])
    """
    return run(build_parser().parse_args(argv))
