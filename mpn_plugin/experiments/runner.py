"""What every experiment of :mod:`mpn_plugin.experiments` shares: the run plan, the training
subprocess, the resume rule, the JSON records and the mean ± std of a table cell.

A run is one training of ``tools/train.py`` with config overrides, in its own folder
(``data.save_dir``). The resume rule: a run whose folder has ``results.json`` is finished and
never retrained; its ``command.txt`` is the command it was started with. A run of the paper's
two-stage protocol (Sec. 5.1) starts from the last checkpoint of an IDE run (its stage 1,
``mpn.init_weights``), and that stage counts in the run's budget.
"""
from __future__ import annotations

import json
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..file_io import write_text  # noqa: F401  (re-exported: runner.write_text)
from ..progress import progress_bar

__all__ = ["ROOT", "PlannedRun", "train_command", "last_checkpoint", "run_training",
           "started_with", "same_training", "changed_runs", "refuse_changed", "load_results",
           "headline", "readout_scores", "train_missing", "record", "merge", "write_text",
           "mean_std"]

#: The repository root: the working directory of every training (configs and data paths in
#: the commands are relative to it).
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


@dataclass
class PlannedRun:
    """One training of an experiment.

    Attributes:
        protocol (str): ``imagenet``, ``two_stage`` or ``probe`` (real crops); ``scratch`` or
            ``two_stage`` (ablations, ``--ide-epochs``).
        name (str): the model, probe or ablation row (``ide``: a stage 1).
        seed (int): ``train.seed``.
        save_dir (str): the run's folder (``data.save_dir``).
        command (list): the training command.
        stage1_dir (str): the folder of the IDE run it starts from (two-stage protocol), or
            None.
    """
    protocol: str
    name: str
    seed: int
    save_dir: str
    command: Sequence[str] = ()
    stage1_dir: Optional[str] = None


def train_command(config: str, seed: int, save_dir: str, root: str = "",
                  opts: Sequence[str] = ()) -> List[str]:
    """The command of one training: ``tools/train.py`` with ``config``, the data root (if
    given), the seed, the run folder and then ``opts`` (config overrides, key value ...).

    Examples::

        >>> train_command("configs/cuhk01/mpn_mobilenetv2.yaml", 1, "log/x/seed1",
        ...               opts=["train.max_epoch", "3"])[1:]
        ['tools/train.py', '--config-file', 'configs/cuhk01/mpn_mobilenetv2.yaml',
         'train.seed', '1', 'data.save_dir', 'log/x/seed1', 'train.max_epoch', '3']
    """
    return [sys.executable, "tools/train.py", "--config-file", config,
            *(["--root", root] if root else []), "train.seed", str(seed),
            "data.save_dir", save_dir, *opts]


def last_checkpoint(save_dir: str, epochs: int) -> str:
    """torchreid's name for the checkpoint of the last epoch of a run of ``epochs`` epochs:
    what a stage-2 run loads (``mpn.init_weights``)."""
    return osp.join(save_dir, "model", f"model.pth.tar-{epochs}")


def run_training(cmd: Sequence[str], save_dir: str, what: str) -> None:
    """Run the training ``cmd`` in the repository root; its ``command.txt`` and ``stdout.txt``
    (output and errors) go to ``save_dir``.

    Raises:
        RuntimeError: the training failed; ``what`` names it, with the log to read.
    """
    os.makedirs(save_dir, exist_ok=True)
    with open(osp.join(save_dir, "command.txt"), "w") as f:
        f.write(shlex.join(cmd) + "\n")
    with open(osp.join(save_dir, "stdout.txt"), "w") as out:
        proc = subprocess.run(list(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); "
                           f"see {osp.join(save_dir, 'stdout.txt')}")


def started_with(cmd: Sequence[str], save_dir: str) -> str:
    """The command a finished run was started with (its ``command.txt``), else ``cmd``."""
    path = osp.join(save_dir, "command.txt")
    if osp.isfile(path):
        with open(path) as f:
            return f.read().strip()
    return shlex.join(cmd)


def changed_runs(runs: Sequence[PlannedRun]) -> List[Tuple[PlannedRun, str]]:
    """The finished runs of ``runs`` whose ``command.txt`` trains something else than the
    planned command (compared by the resolved config, see :func:`_what_it_trains`), with the
    command they were started with: their results answer another question (other overrides,
    image size, schedule) and must not be reused silently.

    Examples::

        >>> for run, was in changed_runs(plan):
        ...     print(run.save_dir, was)
    """
    changed = []
    for run in runs:
        path = osp.join(run.save_dir, "command.txt")
        if load_results(run.save_dir) is None or not osp.isfile(path):
            continue
        with open(path) as f:
            was = f.read().strip()
        if not same_training(shlex.split(was), run.command):
            changed.append((run, was))
    return changed


def same_training(cmd: Sequence[str], other: Sequence[str]) -> bool:
    """Whether two ``tools/train.py`` commands train the same thing: equal resolved configs,
    their run folders aside (see :func:`_what_it_trains`).

    Examples::

        >>> same_training(train_command(cfg, 1, 'log/a'), train_command(cfg, 1, 'log/b'))
        True
    """
    return _what_it_trains(cmd) == _what_it_trains(other)


def refuse_changed(runs: Sequence[PlannedRun], log_dir: str, report_only: bool = False,
                   tag: str = "runs") -> None:
    """Stop before anything is trained or written when finished runs of ``runs`` were started
    with another training than the one planned (:func:`changed_runs`): their results would be
    reused as if they answered this command. With ``report_only`` it only warns (their rows are
    tabulated as recorded).

    Args:
        runs (list): the planned runs, each with its command.
        log_dir (str): the experiment's ``--log-dir`` (named in the message).
        report_only (bool): warn instead of raising.
        tag (str): the prefix of the warning.

    Raises:
        ValueError: naming up to five such folders, the commands they were started with, and
            the fix (another ``--log-dir``, or move the folders away).

    Examples::

        >>> refuse_changed(plan, args.log_dir, args.report_only, tag="ablation")
    """
    changed = changed_runs(runs)
    if not changed:
        return
    listing = "\n".join(f"  {run.save_dir}: started with {was}" for run, was in changed[:5])
    more = f"\n  (and {len(changed) - 5} more)" if len(changed) > 5 else ""
    message = (f"{len(changed)} finished run(s) in --log-dir {log_dir} were started with "
               f"another command than this one plans:\n{listing}{more}\n")
    if not report_only:
        raise ValueError(message + "Their results would be reused as if they were this "
                         "command's. Pass another --log-dir (e.g. one per --opts or --epochs), "
                         "or move those folders away; nothing was trained or written.")
    print(f"[{tag}] warning: " + message + "their rows are tabulated as recorded.", flush=True)


def _what_it_trains(cmd: Sequence[str]):
    """What a ``tools/train.py`` command trains: its complete config (defaults, file, ``--root``
    and overrides resolved, so a value set on the command line equals the same value in the
    file) without the run's own folder (``data.save_dir``) and with a stage-1 checkpoint
    (``mpn.init_weights``) named by ``<run>/seed<k>/model/<file>`` alone. A command whose
    config no longer loads (a key renamed since) is compared by its arguments."""
    args = list(cmd[1:])
    try:
        from ..train import build_parser, setup_cfg
        ns = build_parser().parse_args(args[1:] if args[:1] == ["tools/train.py"] else args)
        if ns.config_file and not osp.isabs(ns.config_file):
            ns.config_file = osp.join(ROOT, ns.config_file)
        cfg = setup_cfg(ns, check=False)     # resolved, not value-checked (no backbone built)
    except Exception:                     # noqa: BLE001  (any failure: compare the arguments)
        return [a for i, a in enumerate(args)
                if a != "data.save_dir" and (i == 0 or args[i - 1] != "data.save_dir")]
    cfg.defrost()
    cfg.data.save_dir = ""
    if cfg.mpn.init_weights:
        cfg.mpn.init_weights = "/".join(osp.normpath(cfg.mpn.init_weights).split(os.sep)[-4:])
    return cfg.dump()


def load_results(save_dir: str) -> Optional[dict]:
    """The ``results.json`` of a run folder, or None while the run is not finished."""
    path = osp.join(save_dir, "results.json")
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def headline(res: dict) -> dict:
    """``{"rank1", "mAP", ...}`` (fractions) of the first test set of a results.json."""
    return next(iter(res["results"].values()))


def readout_scores(res: dict) -> dict:
    """``{"readouts": {readout: {"rank1", "mAP"}}}`` (percent) of a results.json that has
    them, else ``{}``."""
    if not res.get("readouts"):
        return {}
    return {"readouts": {k: {m: round(100 * next(iter(v.values()))[m], 2) for m in ("rank1", "mAP")}
                         for k, v in res["readouts"].items() if v}}


def train_missing(runs: Sequence[PlannedRun], start: Callable[[PlannedRun], None],
                  max_runs: int = 0, tag: str = "runs", desc: str = "runs") -> None:
    """Train, one after another, the runs of ``runs`` that have no results yet (at most
    ``max_runs``; 0: all), each by ``start(run)``, and print its scores.

    Args:
        runs (list): :class:`PlannedRun` in training order (a stage 1 before its stage 2).
        start (callable): trains one run (see :func:`run_training`).
        max_runs (int): stop after this many new runs (resume later with the same command).
        tag (str): the prefix of the printed lines.
        desc (str): the progress bar's label.

    Examples::

        >>> train_missing(runs, lambda r: run_training(r.command, r.save_dir, r.name),
        ...               max_runs=4)
    """
    todo = [r for r in runs if load_results(r.save_dir) is None]
    if max_runs:
        todo = todo[:max_runs]
    for run in progress_bar(todo, desc=desc, disable=None):  # throttled without a terminal
        if load_results(run.save_dir) is not None:
            # finished meanwhile (by another runner sharing the log dir, or through a linked
            # run folder such as an IDE stage shared with the softmax model): never retrained
            print(f"[{tag}] {run.protocol} {run.name} seed {run.seed}: finished meanwhile",
                  flush=True)
            continue
        t = time.time()
        start(run)
        res = load_results(run.save_dir)
        r = headline(res)
        readouts = "".join(f" | {k} {v['mAP']:.1f}"
                           for k, v in readout_scores(res).get("readouts", {}).items())
        print(f"[{tag}] {run.protocol} {run.name} seed {run.seed}: Rank-1 "
              f"{100 * r['rank1']:.1f} mAP {100 * r['mAP']:.1f}{readouts} "
              f"({(time.time() - t) / 60:.1f} min)", flush=True)


def record(runs: Sequence[PlannedRun], dataset: str, include_ide: bool = False) -> List[Dict]:
    """One JSON row per finished run of ``runs``: ``{"dataset", "model", "protocol", "seed",
    "rank1", "mAP", "epochs", "wall_s", "command"}`` (+ ``readouts``). A run from a stage-1
    checkpoint counts that stage's epochs and wall time, and its command is both commands
    joined by ``&&``. The IDE stage is a row of its own only with ``include_ide``.

    Examples::

        >>> rows = record(plan, "cuhk01")
        >>> rows[0]["mAP"], rows[0]["command"]
    """
    rows = []
    for run in runs:
        res = load_results(run.save_dir)
        if res is None or (run.name == "ide" and not include_ide):
            continue
        r = headline(res)
        epochs, wall = len(res["loss_history"]), res["wall_time_s"]
        full_cmd = started_with(run.command, run.save_dir)
        if run.stage1_dir:
            ide = load_results(run.stage1_dir)
            epochs, wall = epochs + len(ide["loss_history"]), wall + ide["wall_time_s"]
            full_cmd = started_with([], run.stage1_dir) + " && " + full_cmd
        rows.append({"dataset": dataset, "model": run.name, "protocol": run.protocol,
                     "seed": run.seed, "rank1": round(100 * r["rank1"], 2),
                     "mAP": round(100 * r["mAP"], 2), "epochs": epochs,
                     "wall_s": round(wall, 1), "command": full_cmd, **readout_scores(res),
                     **({"device": res["device"]} if "device" in res else {})})
    return rows


def merge(path: str, rows: List[Dict]) -> List[Dict]:
    """The rows of the JSON list ``path`` (if it exists) with ``rows`` merged in: a row of
    ``rows`` replaces the one with the same dataset, model, protocol and seed, in place; new
    rows come at the end.

    Raises:
        ValueError: ``path`` is not a JSON list of run records (it is left untouched).

    Examples::

        >>> rows = merge("docs/real_crops.json", record(plan, "cuhk01"))
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


def mean_std(values: Sequence[float], empty: str = "-") -> str:
    """A table cell: ``mean ± sample std`` (one decimal), the value itself for one seed,
    ``empty`` for none.

    Examples::

        >>> mean_std([70.0, 72.0]), mean_std([70.0]), mean_std([])
        ('71.0 ± 1.4', '70.0', '-')
    """
    if not values:
        return empty
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
