"""Atomic file writes shared by checkpoints (``compat.save_checkpoint``) and prior caches
(``priors.cache``). Torch-free: ``tools/generate_priors.py`` imports it in the prior
environment too.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from typing import Any, Callable


def save_atomically(write: Callable[[str], Any], fpath: str) -> str:
    """Write ``fpath`` through ``write(temporary_path)``, then rename it into place.

    The temporary file ``<fpath>.<random>.tmp`` is in the same folder (so ``os.replace`` is an
    atomic rename) and flushed to disk before the rename: a process killed mid-write leaves the
    previous ``fpath`` intact and at worst that temporary file (removed when the write fails in
    Python; readers of chunked outputs remove stale ones, see ``priors.cache``).

    Args:
        write (callable): ``write(path)`` writes the complete file to ``path``.
        fpath (str): the destination.

    Returns:
        str: ``fpath``.

    Examples::

        >>> save_atomically(lambda tmp: torch.save(state, tmp), 'log/model/model.pth.tar-3')
        >>> save_atomically(lambda tmp: np.savez_compressed(open(tmp, 'wb'), **arrays), 'p.npz')
    """
    folder, name = osp.split(osp.abspath(fpath))
    fd, tmp = tempfile.mkstemp(prefix=f"{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    return fpath


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically (a killed run leaves the previous file), with the
    permissions ``open(path, "w")`` would give it.

    Examples::

        >>> write_text("log/run/table.md", "| a |\\n")
    """
    umask = os.umask(0)
    os.umask(umask)

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~umask)
    return save_atomically(write, path)


def write_json(path: str, obj: Any, indent: int = 2) -> str:
    """Write ``obj`` as JSON to ``path`` atomically (see :func:`write_text`).

    Examples::

        >>> write_json("log/run/results.json", {"mAP": 0.5})
    """
    import json
    return write_text(path, json.dumps(obj, indent=indent))
