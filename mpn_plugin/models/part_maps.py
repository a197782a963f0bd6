"""Part-specific feature maps P_k, the inputs of the auxiliary tasks (Sec. 3.3, Fig. 5b).

For every image and every channel of F:

1. ``F * M``: element-wise product with the coarse person mask M (skipped by the
   ``roi_resize`` prior variant of Table 2);
2. the rows between the upper and lower boundary of the ROI are resized to F's size by bilinear
   interpolation (this corrects pedestrian detection errors);
3. the resized map is split uniformly into K horizontal strips; strip k is P_k.

Steps 2-3 are one batched bilinear resampling along the rows (columns are kept as they are),
computed as a batched matrix product with a (R, H) interpolation matrix per image (two
non-zeros per row):
for image b with ROI rows ``[r0, r1) = [top * H, bottom * H)``, output row i of
``R = K * strip_height`` rows samples F at ``y = r0 + (i + 0.5) * (r1 - r0) / R - 0.5``,
clamped to the ROI's rows ``[floor(r0), ceil(r1) - 1]`` and linearly interpolated between the
two nearest rows. For integer boundaries (the prior's boundaries are rows of M) this is exactly
``F.interpolate(F[:, :, r0:r1], size=(R, W), mode='bilinear', align_corners=False)`` per image
(tested against that loop), without a Python loop over images. When H is divisible by K,
``R = H`` ("resize the ROI to F's size, then split into K strips"). When it is not (e.g. H =
16, K = 6), the ROI is resized to ``R = K * ceil(H / K)`` rows and split evenly, so every strip
has the same height ``ceil(H / K)`` and covers exactly 1/K of the ROI.

Priors: ``prior_mask`` (B, H, W) in {0, 1} at feature-map size and ``prior_roi`` (B, 2) =
(top, bottom) as fractions of the image height (``top < bottom``; a one-row ROI is valid).
A fallback prior (Sec. 3.2) is M = 1 and ROI = (0, 1): plain uniform division of F.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

PRIOR_VARIANTS = ("full", "roi_resize", "uniform")


def strip_height(height: int, num_parts: int) -> int:
    """Rows of each P_k: ``ceil(H / K)`` (= H / K when divisible)."""
    return math.ceil(height / num_parts)


def part_feature_maps(feature_map: torch.Tensor, num_parts: int,
                      prior_mask: Optional[torch.Tensor] = None,
                      prior_roi: Optional[torch.Tensor] = None,
                      variant: str = "full") -> torch.Tensor:
    """Build P_1..P_K for a batch (Fig. 5b).

    Args:
        feature_map (Tensor): F, (B, C, H, W).
        num_parts (int): K.
        prior_mask (Tensor, optional): M, (B, H, W); None = all ones.
        prior_roi (Tensor, optional): (B, 2) top/bottom fractions of the height; None = (0, 1).
        variant (str): ``full`` (mask, then ROI resize), ``roi_resize`` (ROI resize without the
            mask multiply) or ``uniform`` (uniform division of F, priors ignored): Table 2.

    Returns:
        Tensor: (B, K, C, h, W) with ``h = ceil(H / K)``.

    Examples::

        >>> F = torch.arange(12.).view(1, 1, 12, 1)
        >>> part_feature_maps(F, 3)[0, :, 0, :, 0]          # uniform division
        tensor([[ 0.,  1.,  2.,  3.],
                [ 4.,  5.,  6.,  7.],
                [ 8.,  9., 10., 11.]])
    """
    if variant not in PRIOR_VARIANTS:
        raise ValueError(f"unknown prior variant '{variant}'; choose one of {PRIOR_VARIANTS}")
    B, C, H, W = feature_map.shape
    K = num_parts
    h = strip_height(H, K)
    x = feature_map
    if variant == "uniform" or prior_roi is None:
        if variant == "full" and prior_mask is not None:
            x = x * prior_mask.unsqueeze(1).to(x.dtype)
        if H % K == 0:
            # Uniform division: a pure reshape, (B, C, H, W) -> (B, K, C, H/K, W).
            return x.view(B, C, K, h, W).permute(0, 2, 1, 3, 4)
        roi = x.new_tensor([0.0, 1.0]).expand(B, 2)
    else:
        if variant == "full" and prior_mask is not None:
            x = x * prior_mask.unsqueeze(1).to(x.dtype)  # (B, C, H, W) * (B, 1, H, W)
        roi = prior_roi.to(x.dtype)
    R = K * h
    top, bottom = roi[:, 0:1] * H, roi[:, 1:2] * H                   # (B, 1) ROI rows [r0, r1)
    i = torch.arange(R, device=x.device, dtype=x.dtype)
    y = top + (i + 0.5) * (bottom - top) / R - 0.5                    # (B, R) source rows
    y = torch.maximum(y, torch.floor(top))
    y = torch.minimum(y, torch.ceil(bottom) - 1).clamp(0, H - 1)
    y0 = torch.floor(y)
    w = (y - y0).unsqueeze(2)                                         # weight of the next row
    y0 = y0.long().unsqueeze(2)
    y1 = (y0 + 1).clamp(max=H - 1)
    # interpolation matrix A (B, R, H): row i holds 1 - w at y0 and w at y1 (added up where
    # they coincide), so rows = A_b F_b is the resampling as ONE batched GEMM (its backward is
    # A_b^T G_b), instead of two row gathers whose backward scatters (index_put) into F
    interp = torch.zeros(B, R, H, device=x.device, dtype=x.dtype)
    interp.scatter_add_(2, y0, 1 - w).scatter_add_(2, y1, w)
    rows = torch.bmm(interp, x.transpose(1, 2).reshape(B, H, C * W))  # (B, R, C*W)
    # (B, R, C*W) -> (B, K, h, C, W) -> (B, K, C, h, W)
    return rows.view(B, K, h, C, W).permute(0, 1, 3, 2, 4)
