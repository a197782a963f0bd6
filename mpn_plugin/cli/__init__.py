"""Command lines: the console scripts of ``pyproject.toml`` and the tools without another home.

Each command's module has ``build_parser()`` and ``main(argv=None)``; ``tools/<name>.py`` and
the console scripts below are thin front ends over it. ``main`` returns its summary to Python
callers (tests, notebooks); a console script must return an exit status instead (a returned
dict would be printed and exit with 1), which :func:`run_main` makes of it.

=================== ============================================ ==========================
console script      module                                       tools/ front end
=================== ============================================ ==========================
``mpn-train``       :mod:`mpn_plugin.train`                      ``train.py``
``mpn-experiments`` :mod:`mpn_plugin.experiments`                (the experiment runner)
``mpn-priors``      :mod:`mpn_plugin.cli.generate_priors`            ``generate_priors.py``
``mpn-prepare``     :mod:`mpn_plugin.cli.prepare_dataset`        ``prepare_dataset.py``
``mpn-extract``     :mod:`mpn_plugin.inference.extract`          ``extract_features.py``
``mpn-search``      :mod:`mpn_plugin.inference.search`           ``search_gallery.py``
``mpn-export``      :mod:`mpn_plugin.cli.export_onnx`            ``export_onnx.py``
=================== ============================================ ==========================

Examples::

    $ mpn-priors --dataset synthetic_pedestrians --root data --adapter synthetic
    $ mpn-train --config-file configs/mpn_synthetic.yaml
"""
from __future__ import annotations

import functools
import importlib
from typing import List, Optional


def run_main(module: str, argv: Optional[List[str]] = None) -> int:
    """Run ``module.main(argv)`` and return its exit status: 1 when it reports ``ok: False``
    (the ONNX parity check), else 0 (errors exit through ``SystemExit`` themselves).

    Args:
        module: the dotted name of a module with ``main(argv=None)``.
        argv: its arguments (default ``sys.argv[1:]``).

    Examples::

        >>> run_main("mpn_plugin.cli.generate_priors", ["--help"])   # doctest: +SKIP
    """
    result = importlib.import_module(module).main(argv)
    return 1 if isinstance(result, dict) and result.get("ok") is False else 0


#: console script -> the module whose ``main`` it runs (the table above; ``pyproject.toml``
#: points each script at the callable of the same name below)
COMMANDS = {
    "train": "mpn_plugin.train",
    "experiments": "mpn_plugin.experiments",
    "priors": "mpn_plugin.cli.generate_priors",
    "prepare": "mpn_plugin.cli.prepare_dataset",
    "extract": "mpn_plugin.inference.extract",
    "search": "mpn_plugin.inference.search",
    "export": "mpn_plugin.cli.export_onnx",
}

train, experiments, priors, prepare, extract, search, export = (
    functools.partial(run_main, module) for module in COMMANDS.values())
