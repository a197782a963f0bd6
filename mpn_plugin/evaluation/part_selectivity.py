"""Do MPN's main tasks select part-relevant channels (Sec. 3.1, 3.3)? A direct measurement.

The paper's premise: head k's first 1x1 conv selects channels that respond at body part k, so
the global max pooling (GMP) of the main task (MT) on the whole map F picks part k's location,
with no prior at test time. Parameter and feature space alignment with the auxiliary task (AT)
is what should teach it. This module measures where the GMP of each MT head actually picks:

* :func:`main_task_responses`: the MT heads' first-layer maps ``ReLU(BN(W1_k F))`` on images,
  exactly what the test-time MT max-pools, (B, K, D, H, W);
* :func:`strip_counts`: for each head k, how many of its channel maxima (the positions GMP
  selects) lie in each uniform horizontal strip j of F: a (K, K) matrix. A part-selective
  MPN has most of row k on column k (part k of the AT's prior on well-framed crops), and the
  heads' mean strip goes top to bottom. Without selection all rows look alike: every head picks
  wherever the most salient content is;
* :func:`part_selectivity`: the matrix and summary numbers, from a model and its inputs;
* :func:`trunk_features`: the head-free test feature GAP(F), to tell how much of a model's
  retrieval comes from its trunk and how much from its heads.

Grad-CAM (:mod:`~mpn_plugin.visualization.gradcam`) asks the same question through the
classifiers' gradients; this measure needs no labels and no backward pass, and reads the layer
the paper says does the selecting.

Examples::

    >>> report = part_selectivity(model, [images])    # images: (B, 3, h, w), model: an MPN
    >>> report["matrix"].shape, report["diagonal"], report["chance_diagonal"]
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterable

import numpy as np
import torch
from scipy.stats import spearmanr


def strip_of_rows(height: int, num_parts: int) -> torch.Tensor:
    """Uniform strip (0..K-1) that holds the centre of each of the H rows of F: (H,) long."""
    centres = torch.arange(height, dtype=torch.float64) + 0.5
    return (centres * num_parts / height).floor().long().clamp_(max=num_parts - 1)


@contextlib.contextmanager
def _eval_mode(model):
    """The block runs ``model`` in eval mode (test-time BN statistics); its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def main_task_responses(model, images: torch.Tensor) -> torch.Tensor:
    """First-layer maps of the K main-task heads, ``ReLU(BN(W1_k F))`` with the test-time BN
    statistics: the maps whose GMP starts the MT features. (B, 3, h, w) -> (B, K, D, H, W).

    Raises:
        ValueError: the model has no main task (e.g. the Baseline, ``tasks='at_only'``).
    """
    heads = getattr(model, "main_heads", None)
    if heads is None:
        raise ValueError("part selectivity needs a model with main tasks (MPN, MPN°, MT Only, "
                         "Naive MTL); the Baseline (tasks='at_only') has none")
    with _eval_mode(model):
        F = model(images, return_featuremaps=True)                          # (B, C, H, W)
        B, C, H, W = F.shape
        y = heads.first(F.reshape(B, C, H * W), shared_input=True)          # (B, K, D, H*W)
    return y.view(B, y.shape[1], y.shape[2], H, W)


def strip_counts(responses: torch.Tensor) -> torch.Tensor:
    """Where GMP picks, per head: (N, K, D, H, W) -> (K, K) counts, entry [k, j] = number of
    head k's (image, channel) maxima that lie in uniform strip j (:func:`strip_of_rows`).

    A channel whose map is all zero on an image (ReLU off everywhere) has no maximum there and
    is not counted; ties go to the first position in row-major order (``argmax``)."""
    N, K, D, H, W = responses.shape
    peak, where = responses.reshape(N, K, D, H * W).max(-1)        # (N, K, D)
    strip = strip_of_rows(H, K).to(where.device)[where // W]        # (N, K, D)
    head = torch.arange(K, device=where.device).view(1, K, 1).expand_as(strip)
    valid = peak > 0
    pairs = head[valid] * K + strip[valid]                          # (head, strip) as one index
    return torch.bincount(pairs, minlength=K * K).view(K, K).double().cpu()


def part_selectivity(model, batches: Iterable[torch.Tensor]) -> Dict[str, object]:
    """The (K, K) matrix of strip shares over all images of ``batches`` (model inputs
    (B, 3, h, w)) and its summaries.

    Returns:
        dict: ``matrix`` (K, K): row k = shares of head k's maxima per strip j (rows sum to 1);
        ``chance`` (K,): each strip's share of F's rows (every row of the matrix if GMP picked
        rows at random); ``diagonal``: mean of the matrix's diagonal (head k picking in strip
        k); ``chance_diagonal``: the same for ``chance`` (1/K); ``mean_strip`` (K,): each head's
        mean strip index of its maxima; ``spearman``: rank correlation of k with
        ``mean_strip`` (1 = heads ordered top to bottom, 0 when all heads look alike);
        ``feature_size``: (H, W) of F; ``maxima``: number of maxima counted.
    """
    counts, size = None, None
    for images in batches:
        responses = main_task_responses(model, images)
        c = strip_counts(responses)
        counts = c if counts is None else counts + c
        size = tuple(responses.shape[-2:])
    if counts is None:
        raise ValueError("part_selectivity got no images")
    K, H = counts.shape[0], size[0]
    matrix = counts / counts.sum(1, keepdim=True).clamp_min(1)
    chance = torch.bincount(strip_of_rows(H, K), minlength=K).double() / H
    mean_strip = matrix @ torch.arange(K, dtype=torch.float64)
    rho = spearmanr(np.arange(K), mean_strip.numpy()).statistic if K > 1 else 1.0
    return {"matrix": matrix, "chance": chance, "diagonal": float(matrix.diagonal().mean()),
            "chance_diagonal": float(chance.mean()), "mean_strip": mean_strip,
            "spearman": 0.0 if np.isnan(rho) else float(rho),
            "span": float(mean_strip.max() - mean_strip.min()), "feature_size": size,
            "maxima": int(counts.sum())}


@torch.no_grad()
def trunk_features(model, images: torch.Tensor) -> torch.Tensor:
    """Global average pooling of the trunk's map F, no heads: (B, 3, h, w) -> (B, C)."""
    with _eval_mode(model):
        return model(images, return_featuremaps=True).mean((2, 3))


#: the value at which MobileNetV2's final ReLU6 clips F
RELU6_CLIP = 6.0


def _share_at_maxima(responses: torch.Tensor, clipped: torch.Tensor):
    """(sum, count) over the (image, head, channel) maxima of ``responses`` (B, K, D, L) of the
    share of F's channels that are clipped at the picked position; ``clipped`` (B, K, L) is
    that share per head input position. Channels with an all-zero map pick nothing."""
    peak, where = responses.max(-1)                                     # (B, K, D)
    share = clipped.gather(2, where)                                    # (B, K, D)
    valid = peak > 0
    return float(share[valid].sum()), int(valid.sum())


@torch.no_grad()
def feature_saturation(model, batches: Iterable[torch.Tensor],
                       clip: float = RELU6_CLIP) -> Dict[str, float]:
    """How much of F sits exactly at a clipping value (MobileNetV2's ReLU6: 6.0), overall and
    where the heads' GMP picks: a max-pooled position whose F entries are clipped passes no
    gradient to the trunk through them.

    For every (image, head, channel) maximum of the first-layer map (test-time BN statistics),
    the share of the C entries of the head's input at that position that equal ``clip``:
    the MT heads on the whole F (what the test-time MT max-pools) and, where the model has
    them, the AT heads on uniform strips of F (no priors; the training-time ATs see the
    prior's part maps instead).

    Returns:
        dict: ``overall`` (share of all F entries at ``clip``), ``mt`` and ``at`` (mean share at
        the maxima; absent without those heads), ``maxima_mt`` / ``maxima_at`` (counts),
        ``clip``.

    Examples::

        >>> feature_saturation(model, [images])["mt"]
    """
    from ..models.part_maps import part_feature_maps
    sums = {"overall": [0.0, 0], "mt": [0.0, 0], "at": [0.0, 0]}
    for images in batches:
        with _eval_mode(model):
            F = model(images, return_featuremaps=True)                      # (B, C, H, W)
            B, C, H, W = F.shape
            at_clip = F == clip
            sums["overall"][0] += float(at_clip.sum())
            sums["overall"][1] += F.numel()
            if model.main_heads is not None:
                y = model.main_heads.first(F.reshape(B, C, H * W), shared_input=True)
                clipped = at_clip.float().mean(1).reshape(B, 1, H * W).expand(B, y.shape[1], -1)
                s, n = _share_at_maxima(y, clipped)                         # y: (B, K, D, H*W)
                sums["mt"][0] += s
                sums["mt"][1] += n
            if model.auxiliary_heads is not None:
                K = model.num_parts
                parts = part_feature_maps(F, K, variant="uniform")           # (B, K, C, h, W)
                x = parts.reshape(B, K, C, -1)
                y = model.auxiliary_heads.first(x)                           # (B, K, D, h*W)
                s, n = _share_at_maxima(y, (x == clip).float().mean(2))
                sums["at"][0] += s
                sums["at"][1] += n
    if not sums["overall"][1]:
        raise ValueError("feature_saturation got no images")
    out = {"clip": clip, "overall": sums["overall"][0] / sums["overall"][1]}
    for task in ("mt", "at"):
        if sums[task][1]:
            out[task] = sums[task][0] / sums[task][1]
            out[f"maxima_{task}"] = sums[task][1]
    return out
