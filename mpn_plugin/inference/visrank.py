"""One PNG per query: the query, then its top-k gallery images, in the layout of torchreid's
``visualize_ranked_results`` (black border on the query, green border on a gallery image of
the query's identity, red on another; grey when identities are unknown), with each result's
rank and cosine similarity under it.

Examples::

    >>> draw_ranked_results('q.jpg', ['g1.jpg', 'g2.jpg'], [0.91, 0.85], 'vis/q.png',
    ...                     query_pid=3, gallery_pids=[3, 7])
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np

from .feature_extractor import read_rgb_image

__all__ = ["draw_ranked_results"]

BORDER = 10             # px, as torchreid's BW
SPACING = 10            # between gallery images (torchreid's GRID_SPACING)
QUERY_SPACING = 90      # after the query (torchreid's QUERY_EXTRA_SPACING)
TEXT_BAND = 22          # px under each image for "rank: score"
GREEN, RED, BLACK, GREY = (0, 200, 0), (0, 0, 255), (0, 0, 0), (160, 160, 160)   # BGR


def _tile(path: str, width: int, height: int, color) -> np.ndarray:
    img = cv2.cvtColor(np.asarray(read_rgb_image(path)), cv2.COLOR_RGB2BGR)
    img = cv2.resize(img, (width - 2 * BORDER, height - 2 * BORDER))
    return cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT,
                              value=color)


def draw_ranked_results(query_path: str, gallery_paths: Sequence[str], scores: Sequence[float],
                        out_path: str, query_pid: int = -1,
                        gallery_pids: Optional[Sequence[int]] = None, width: int = 128,
                        height: int = 256) -> str:
    """Draw the query and its ranked gallery images into ``out_path`` (PNG).

    Args:
        query_path (str): query image.
        gallery_paths (sequence of str): top-k gallery images, best first.
        scores (sequence of float): their cosine similarities.
        out_path (str): PNG file to write (folders are created).
        query_pid (int): the query's identity (-1: unknown).
        gallery_pids (sequence of int, optional): identities of the gallery images; borders
            are green / red when both sides are known, grey otherwise.
        width, height (int): size of each tile.

    Returns:
        str: ``out_path``.
    """
    k = len(gallery_paths)
    canvas = np.full((height + TEXT_BAND, (k + 1) * width + k * SPACING + QUERY_SPACING, 3),
                     255, np.uint8)
    canvas[:height, :width] = _tile(query_path, width, height, BLACK)
    cv2.putText(canvas, "query", (4, height + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, BLACK, 1)
    for r, (path, score) in enumerate(zip(gallery_paths, scores)):
        pid = -1 if gallery_pids is None else int(gallery_pids[r])
        known = query_pid >= 0 and pid >= 0
        color = (GREEN if pid == query_pid else RED) if known else GREY
        x = width + QUERY_SPACING + r * (width + SPACING)
        canvas[:height, x:x + width] = _tile(path, width, height, color)
        cv2.putText(canvas, f"{r + 1}: {score:.3f}", (x + 2, height + 16),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, color if known else BLACK, 1)
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    if not cv2.imwrite(out_path, canvas):
        raise OSError(f"could not write {out_path!r}")
    return out_path
