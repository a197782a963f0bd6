"""Where prior caches live and the ``tools/generate_priors.py`` command that makes one.

Training looks for ``priors_<tool>_<Hf>x<Wf>.npz`` in torchreid's ``dataset_dir`` of the dataset
(``<root>/market1501`` for ``market1501_prior``), keyed by image path relative to that folder.
:func:`standard_dataset_dir` finds that folder for any image folder inside a standard layout,
and :func:`generate_priors_command` writes the command, as it must be typed, that errors print.

Only the standard library is used (this runs in the torch-free prior environment too).

Examples::

    >>> standard_dataset_dir("/data/market1501/Market-1501-v15.09.15/bounding_box_train")
    ('/data/market1501', 'market1501_prior')
    >>> generate_priors_command("market1501_prior", "/data", 384, 128)   # doctest: +SKIP
    'python /repo/tools/generate_priors.py --dataset market1501_prior --root /data --adapter \
mediapipe --height 384 --width 128'
"""
from __future__ import annotations

import os.path as osp
import shlex
import shutil
import sys
from typing import Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO_ROOT, "tools", "generate_priors.py")
MEDIAPIPE_PYTHON = osp.join(REPO_ROOT, ".venv-mediapipe", "bin", "python")
MAIN_PYTHON = osp.join(REPO_ROOT, ".venv", "bin", "python")

# torchreid's dataset_dir of each prior-aware dataset -> its registered name
# (tests/test_generate_priors_command.py checks this table against the registry)
STANDARD_DATASET_DIRS = {
    "market1501": "market1501_prior",
    "dukemtmc-reid": "dukemtmcreid_prior",
    "cuhk03": "cuhk03_prior",
    "msmt17": "msmt17_prior",
    "synthetic_pedestrians": "synthetic_pedestrians",
    "Occluded_Duke": "occluded_duke_prior",
}
SYNTHETIC_DATASETS = ("synthetic_pedestrians",)


def standard_dataset_dir(folder: str) -> Optional[Tuple[str, str]]:
    """(dataset folder, registered dataset name) when ``folder`` is, or lies inside, a standard
    torchreid dataset folder (e.g. ``<root>/market1501``); else None."""
    path = osp.abspath(osp.expanduser(folder))
    while True:
        name = STANDARD_DATASET_DIRS.get(osp.basename(path))
        if name:
            return path, name
        parent = osp.dirname(path)
        if parent == path:
            return None
        path = parent


def default_adapter(dataset: str) -> str:
    """The adapter that works out of the box for ``dataset``: the synthetic set's own maps, else
    the built-in mediapipe generator."""
    return "synthetic" if dataset in SYNTHETIC_DATASETS else "mediapipe"


def python_command() -> str:
    """How to call this interpreter: ``python`` when that is what the shell finds, else the
    interpreter's full path (e.g. ``.venv/bin/python`` not activated)."""
    found = shutil.which("python")
    if found and osp.abspath(found) == osp.abspath(sys.executable):
        return "python"
    return sys.executable


def generate_priors_command(dataset: str, root: str, height: Optional[int] = None,
                            width: Optional[int] = None, adapter: Optional[str] = None,
                            overwrite: bool = False, extra: Sequence[str] = ()) -> str:
    """The ``tools/generate_priors.py`` command line that makes the prior cache training looks
    for, with absolute paths so it works from any folder.

    Args:
        dataset (str): registered dataset name (``market1501_prior``...).
        root (str): the data root (``data.root`` / ``--root``).
        height, width (int, optional): the model input size (the cache is per feature size).
        adapter (str, optional): default :func:`default_adapter`.
        overwrite (bool): add ``--overwrite`` (replace a stale cache).
        extra (sequence of str): more arguments (e.g. ``--parsing-dir DIR``).
    """
    adapter = adapter or default_adapter(dataset)
    tool = TOOL if osp.isfile(TOOL) else osp.join("tools", "generate_priors.py")
    args = [python_command(), tool, "--dataset", dataset, "--root", osp.abspath(root),
            "--adapter", adapter]
    if height:
        args += ["--height", str(height)]
    if width:
        args += ["--width", str(width)]
    args += list(extra)
    if overwrite:
        args.append("--overwrite")
    return " ".join(shlex.quote(a) for a in args)


def setup_hint(adapter: str) -> str:
    """What to run once before the command of ``adapter`` ("" when nothing is needed)."""
    if adapter == "mediapipe" and not osp.isfile(MEDIAPIPE_PYTHON):
        return (f" (the mediapipe adapter runs in its own environment; create it once with: "
                f"bash {shlex.quote(osp.join(REPO_ROOT, 'third_party', 'mediapipe_env.sh'))})")
    return ""
