"""Progress bars that stay readable in a log file.

On a terminal, :func:`progress_bar` is plain tqdm. When the bar's stream is not a terminal (CI,
``nohup``, a cluster job, ``> log.txt``), tqdm would still rewrite its line with a carriage
return about 20 times a second, which turns a two-minute job into a multi-megabyte single-line
log. There the bar instead prints one ordinary line (``\\n``-terminated, no ``\\r``) at most
every ``MPN_PROGRESS_INTERVAL`` seconds (default 30) and only after another
``MPN_PROGRESS_PERCENT`` percent (default 5) of the work is done, plus the final line.

This module needs only tqdm (no torch), so the torch-free prior environment uses it too.

Examples::

    >>> from mpn_plugin.progress import progress_bar
    >>> for item in progress_bar(items, desc="priors", unit="img"):
    ...     work(item)
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

from tqdm import tqdm

__all__ = ["progress_bar", "is_terminal", "LogLineWriter"]

DEFAULT_INTERVAL_S = 30.0
DEFAULT_PERCENT = 5.0


def is_terminal(stream) -> bool:
    """True when ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogLineWriter:
    """A file-like wrapper that turns tqdm's ``\\r`` redraws into whole lines.

    Args:
        stream: where the lines go (``sys.stderr`` by default).
    """

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        flush = getattr(self.stream, "flush", None)
        if flush is not None:
            flush()


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be a number "
                         f"(seconds or percent); unset it for the default {default}") from None


def progress_bar(iterable: Optional[Iterable] = None, total: Optional[int] = None,
                 file=None, **kwargs) -> tqdm:
    """tqdm, throttled to whole lines when its stream is not a terminal.

    Args:
        iterable: what to iterate over (as for tqdm).
        total (int, optional): number of items (default: ``len(iterable)`` when it has one).
        file: the stream (default ``sys.stderr``).
        **kwargs: any tqdm argument (``desc``, ``unit``, ``leave``, ``disable``...); an explicit
            ``mininterval`` / ``miniters`` wins over the throttling.

    Returns:
        tqdm: the bar (iterate over it, or call ``update``).

    Examples::

        >>> bar = progress_bar(range(1000), desc="work", file=open("log.txt", "w"))
        >>> bar.mininterval          # 30.0 (a file is not a terminal)
    """
    stream = file if file is not None else sys.stderr
    if total is None and iterable is not None:
        try:
            total = len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if is_terminal(stream):
        return tqdm(iterable, total=total, file=stream, **kwargs)
    if "disable" in kwargs and kwargs["disable"] is None:
        kwargs["disable"] = True  # tqdm's meaning of disable=None: off without a terminal
    interval = _env_float("MPN_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)
    percent = _env_float("MPN_PROGRESS_PERCENT", DEFAULT_PERCENT)
    kwargs.setdefault("mininterval", interval)
    # tqdm's monitor thread forces a redraw and sets miniters to 1 when a bar has printed
    # nothing for maxinterval seconds: a stalled job still shows a line now and then. Without a
    # time throttle (interval 0: lines by percent only) it would fire whenever the thread
    # happens to wake, and lines would follow every item from then on: off there.
    longest = max(kwargs["mininterval"], interval) * 10
    kwargs.setdefault("maxinterval", longest if longest > 0 else float("inf"))
    if total:
        kwargs.setdefault("miniters", max(1, int(total * percent / 100.0)))
    kwargs.setdefault("ascii", True)    # plain characters in log files
    kwargs.setdefault("ncols", 100)
    return tqdm(iterable, total=total, file=LogLineWriter(stream), **kwargs)
