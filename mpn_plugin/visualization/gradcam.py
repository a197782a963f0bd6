"""Per-part Grad-CAM (Sec. 5.2.5, Fig. 8-9): where each of the K part classifiers looks.

For part k with target class c, Grad-CAM [57] on the backbone's last feature map A (C, H, W):
``alpha_ch = mean_ij d y_k^c / d A_chij``, ``cam_k = ReLU(sum_ch alpha_ch A_ch)``, then
normalised to [0, 1] per map and upsampled to the image.

Hand-written rather than pytorch-grad-cam: that library runs one forward + backward per target
and needs a single-output model, so K parts would cost K forwards through a wrapper per image;
here one forward gives all K part logits and K backward passes share it (``retain_graph``), and
torchreid's ``pcb_p6`` is supported through the same adapter.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as Fn

PartLogitsFn = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def part_logits_fn(model: nn.Module) -> PartLogitsFn:
    """``fn(x) -> (A, logits)``: the last feature map A (B, C, H, W) and the K part classifiers'
    logits (K, B, num_classes), for MPN-family models and torchreid's PCB (``pcb_p6/p4``).

    Raises:
        TypeError: for a model with no part classifiers.
    """
    from ..models import MPN

    if isinstance(model, MPN):
        def fn(x):
            A = model.backbone(x, model.backbone_attention)      # MPN*: with RGA-S
            if model.main_heads is not None:
                f = model.main_heads.forward_whole(A)
                return A, model.main_logits(f)
            z = model.auxiliary_task(A)  # Baseline: ATs on uniform division
            return A, model.auxiliary_logits(z)
        return fn
    if hasattr(model, "parts_avgpool") and hasattr(model, "classifier"):  # torchreid PCB
        def fn(x):
            A = model.featuremaps(x)
            v = model.conv5(model.dropout(model.parts_avgpool(A)))    # (B, D, parts, 1)
            logits = [cls(v[:, :, i, :].flatten(1)) for i, cls in enumerate(model.classifier)]
            return A, torch.stack(logits)
        return fn
    raise TypeError(f"{type(model).__name__} has no part classifiers: Grad-CAM per part supports "
                    "MPN models and torchreid's pcb_p6 / pcb_p4")


CAM_METHODS = ("gradcam", "hirescam")


def part_gradcam(model: nn.Module, images: torch.Tensor, targets: Optional[torch.Tensor] = None,
                 logits_fn: Optional[PartLogitsFn] = None, upsample: bool = True,
                 method: str = "gradcam") -> Tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of each part classifier.

    ``method='gradcam'`` is Grad-CAM [57] as in the paper (channel weights = spatially averaged
    gradients). ``method='hirescam'`` keeps the gradient per position,
    ``cam = ReLU(sum_c dy/dA_c * A_c)`` (HiResCAM, Draelos & Carin 2020): for heads that pool
    with a global *max* (MPN's MTs, Eq. 2) the score depends only on the arg-max positions, and
    averaging the gradient spreads that evidence over every position where the same channels
    fire; HiResCAM shows the positions the score really depends on. For a GAP head both are
    the same map.

    Args:
        model (nn.Module): put in eval mode by the caller (BN running statistics).
        images (Tensor): (B, 3, H, W), normalised as for the model.
        targets (Tensor, optional): (B,) class per image (e.g. the true identity); default:
            each part's own predicted class.
        logits_fn (callable, optional): defaults to :func:`part_logits_fn`.
        upsample (bool): bilinear upsampling of the maps to (H, W).

    Returns:
        (cams, classes): cams (B, K, h, w) in [0, 1]; classes (K, B) the explained classes.

    Examples::

        >>> cams, cls = part_gradcam(model.eval(), imgs)   # (B, 6, 256, 128)
    """
    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r}: choose one of {CAM_METHODS}")
    fn = logits_fn or part_logits_fn(model)
    with torch.enable_grad():
        A, logits = fn(images)                                    # (B,C,h,w), (K,B,classes)
        K, B = logits.shape[:2]
        classes = logits.argmax(-1) if targets is None else targets.view(1, B).expand(K, B)
        scores = logits.gather(2, classes.unsqueeze(-1)).squeeze(-1)   # (K, B)
        cams = []
        for k in range(K):
            (grad,) = torch.autograd.grad(scores[k].sum(), A, retain_graph=k < K - 1)
            if method == "gradcam":
                grad = grad.mean(dim=(2, 3), keepdim=True)        # alpha: (B, C, 1, 1)
            cams.append(torch.relu((grad * A).sum(1)))            # (B, h, w)
    cams = torch.stack(cams, 1).detach()                          # (B, K, h, w)
    peak = cams.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
    cams = cams / peak
    if upsample:
        cams = Fn.interpolate(cams, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return cams, classes.detach()


def vertical_centroids(cams: torch.Tensor) -> torch.Tensor:
    """Row centroid of each map as a fraction of the height: (B, K, H, W) -> (B, K)."""
    H = cams.shape[-2]
    rows = (torch.arange(H, dtype=cams.dtype, device=cams.device) + 0.5) / H
    mass = cams.sum(-1)                                           # (B, K, H)
    return (mass * rows).sum(-1) / mass.sum(-1).clamp_min(1e-12)


def centroids_ordered(cams: torch.Tensor, tolerance: float = 0.0) -> torch.Tensor:
    """Whether the K maps' vertical centroids go top to bottom (non-decreasing, up to
    ``tolerance`` of the height) for each image: (B,) bool."""
    c = vertical_centroids(cams)
    return (c[:, 1:] - c[:, :-1] >= -tolerance).all(1)


def centroid_rank_correlation(cams: torch.Tensor) -> torch.Tensor:
    """Spearman correlation between the part index k and the rank of the k-th map's vertical
    centroid, per image: (B, K, H, W) -> (B,) in [-1, 1]. 1 = maps exactly top to bottom in
    part order, 0 = no relation; a softer measure than :func:`centroids_ordered`, which fails
    on a single swapped pair. Ties get the order of the part index (``argsort`` is stable)."""
    c = vertical_centroids(cams)                                  # (B, K)
    K = c.shape[1]
    ranks = c.argsort(dim=1, stable=True).argsort(dim=1).to(c.dtype)  # each centroid's rank
    k = torch.arange(K, dtype=c.dtype, device=c.device)
    d2 = ((ranks - k) ** 2).sum(1)
    return 1 - 6 * d2 / (K * (K * K - 1))
