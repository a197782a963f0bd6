"""The experiment runner: the paper's ablations on the synthetic benchmark and the real-crop
comparisons (models, protocols, probes), as one command with two experiments.

Both train through :mod:`mpn_plugin.experiments.runner` (one run plan, one training
subprocess, one resume rule: a run with ``results.json`` is never retrained), over seeds, with
the paper's two-stage protocol (Sec. 5.1) as an option, and write Markdown tables;
``real-crops`` also keeps a JSON list of runs.

Examples::

    mpn-experiments ablation --groups table1 --seeds 1 2 3 --out docs/ablation.md
    mpn-experiments real-crops --report-only --out docs/real_crops.json --table -
    python tools/run_ablation.py --list            # the same experiments, as tools
    python tools/run_real_crops.py --help
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import ablation, real_crops

__all__ = ["EXPERIMENTS", "build_parser", "main"]

#: sub-command -> the module that runs it (its ``add_arguments`` and ``run``)
EXPERIMENTS = {"ablation": ablation, "real-crops": real_crops}
_HELP = {"ablation": "the paper's ablations on the synthetic benchmark (tools/run_ablation.py)",
         "real-crops": "models, protocols and probe lists on real crops "
                       "(tools/run_real_crops.py)"}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mpn-experiments``: one sub-command per experiment, with the options of
    its tool (``tools/run_ablation.py``, ``tools/run_real_crops.py``).

    Examples::

        >>> args = build_parser().parse_args(["ablation", "--list"])
        >>> args.experiment
        'ablation'
    """
    parser = argparse.ArgumentParser(prog="mpn-experiments", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    for name, module in EXPERIMENTS.items():
        module.add_arguments(sub.add_parser(
            name, help=_HELP[name], description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def main(argv: Optional[List[str]] = None):
    """``mpn-experiments <experiment> [options]``: run one experiment (see its module).

    Returns:
        the experiment's result: the ablation tables (str) or the real-crop rows (list).

    Examples::

        >>> main(["ablation", "--report-only", "--groups", "fig7"])
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return EXPERIMENTS[args.experiment].run(args, argv[argv.index(args.experiment) + 1:])
