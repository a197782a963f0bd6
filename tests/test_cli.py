"""The console scripts of pyproject.toml and the tools/ front ends: each command module has
``build_parser()`` and ``main(argv=None)``, and a console script's exit status says whether
the command succeeded."""
import importlib
import importlib.metadata
import os
import os.path as osp
import subprocess
import sys
import types

import pytest

from mpn_plugin import cli

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCRIPTS = ("mpn-train", "mpn-experiments", "mpn-priors", "mpn-prepare", "mpn-extract",
           "mpn-search", "mpn-export")
MODULES = {"mpn-train": "mpn_plugin.train", "mpn-experiments": "mpn_plugin.experiments",
           "mpn-priors": "mpn_plugin.cli.generate_priors",
           "mpn-prepare": "mpn_plugin.cli.prepare_dataset",
           "mpn-extract": "mpn_plugin.inference.extract",
           "mpn-search": "mpn_plugin.inference.search", "mpn-export": "mpn_plugin.cli.export_onnx"}


def test_every_console_script_is_declared_and_loads():
    points = {e.name: e for e in importlib.metadata.distribution("mpn-reid").entry_points
              if e.group == "console_scripts"}
    assert set(SCRIPTS) <= set(points), sorted(points)
    for name in SCRIPTS:
        assert callable(points[name].load()), name
        # each script runs the main of its own module
        assert points[name].load().args == (MODULES[name],), name


@pytest.mark.parametrize("module", ["mpn_plugin.cli.generate_priors",
                                    "mpn_plugin.cli.prepare_dataset",
                                    "mpn_plugin.inference.extract", "mpn_plugin.inference.search",
                                    "mpn_plugin.cli.export_onnx", "mpn_plugin.train"])
def test_command_modules_have_a_parser_and_main(module):
    mod = importlib.import_module(module)
    assert callable(mod.build_parser) and callable(mod.main)
    with pytest.raises(SystemExit) as exc:
        mod.main(["--help"])
    assert exc.value.code == 0


def test_run_main_turns_a_summary_into_an_exit_status(monkeypatch):
    results = {"ok": {"ok": True}, "failed": {"ok": False}, "summary": {"images": 3}, "none": None}
    for name, result in results.items():
        module = types.ModuleType(f"fake_command_{name}")
        module.main = lambda argv=None, result=result: result
        monkeypatch.setitem(sys.modules, module.__name__, module)
    assert [cli.run_main(f"fake_command_{n}", []) for n in results] == [0, 1, 0, 0]


def test_tools_are_thin_front_ends_without_path_edits():
    for name in sorted(os.listdir(osp.join(ROOT, "tools"))):
        if name.endswith(".py"):
            text = open(osp.join(ROOT, "tools", name)).read()
            assert "sys.path" not in text, name


def test_tool_front_end_runs_from_anywhere(tmp_path):
    r = subprocess.run([sys.executable, osp.join(ROOT, "tools", "generate_priors.py"), "--help"],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "usage: generate_priors.py" in r.stdout, r.stderr
