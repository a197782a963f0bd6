"""The coarse prior of body part locations (Sec. 3.2, Fig. 5a), as pure functions.

Stage 1 (:func:`union_person_mask`, per image, offline): (a) check that the head and at least
one leg are present; (b) if so, the person mask is the union of the tools' person masks (at
image resolution); otherwise the fallback.

Stage 2 (:func:`coarse_prior_from_mask`, per training sample, after any geometric augmentation
of the stage-1 mask together with the image): (c) resize to the feature-map size (area
interpolation: each cell gets the share of it covered by the mask), (d) binarise at
``binarize_threshold`` and dilate with a 1 (row) x 2 (column) kernel: cell (r, c) is set when
(r, c) or its left neighbour (r, c - 1) is set (OpenCV's anchor for an even kernel), i.e. the
mask grows by one cell sideways; (e) the upper and lower boundary of the mask give the ROI.
An empty mask falls back too. Fallback: M = all ones, ROI = the whole image (uniform division).

This module needs only numpy and OpenCV (no torch), so prior generators can run in their own
environment (see ``third_party/README.md``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

CASES = ("prior", "fallback")

# LIP label ids (see docs/ARCHITECTURE.md). Head: hat, hair, sunglasses, face.
LIP_HEAD = (1, 2, 4, 13)
# Leg evidence per side: the bare leg and the shoe of that side; pants (9) and skirt (12)
# cover both legs and carry no side, so they do not count on their own: a person cut at the
# waist shows pants but no leg ends. Legs count as present when either side is present.
LIP_LEFT_LEG = (16, 18)
LIP_RIGHT_LEG = (17, 19)
LIP_PANTS = (9,)

# The label maps of the three SCHP models (Self-Correction Human Parsing) and their head / leg
# label ids, used by PriorConfig.preset. Index = the label value stored in the PNG.
LABEL_MAPS = {
    "lip": ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat",
            "socks", "pants", "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm",
            "left-leg", "right-leg", "left-shoe", "right-shoe"),
    "atr": ("background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants", "dress",
            "belt", "left-shoe", "right-shoe", "face", "left-leg", "right-leg", "left-arm",
            "right-arm", "bag", "scarf"),
    "pascal": ("background", "head", "torso", "upper-arms", "lower-arms", "upper-legs",
               "lower-legs"),
}
LABEL_PRESETS = {
    # head: hat, hair, sunglasses, face; a leg side: that leg + that shoe; pants in the lowest
    # quarter of the person count for both sides
    "lip": dict(head_labels=LIP_HEAD, left_leg_labels=LIP_LEFT_LEG, right_leg_labels=LIP_RIGHT_LEG,
                pants_labels=LIP_PANTS),
    "atr": dict(head_labels=(1, 2, 3, 11), left_leg_labels=(12, 9), right_leg_labels=(13, 10),
                pants_labels=(6,)),
    # Pascal-Person-Part has no sides and no shoes: lower legs are the leg evidence (a crop cut
    # at the knees shows upper legs only)
    "pascal": dict(head_labels=(1,), left_leg_labels=(6,), right_leg_labels=(),
                   pants_labels=()),
}


@dataclass
class PriorConfig:
    """Named thresholds of the pipeline.

    Attributes:
        head_min_fraction (float): head pixels / image pixels needed for "head present".
        leg_min_fraction (float): pixels of one leg side (bare leg + shoe, plus pants below the
            knee line when ``pants_count_as_legs``) needed for "that leg present".
        pants_count_as_legs (bool): pants pixels in the lowest quarter of the person count as
            leg evidence for both sides (people in trousers show no bare legs).
        binarize_threshold (float): stage (d).
        dilation_kernel (tuple): (rows, cols) of the dilation kernel, (1, 2) in the paper.
    """
    head_min_fraction: float = 0.004
    leg_min_fraction: float = 0.002
    pants_count_as_legs: bool = True
    binarize_threshold: float = 0.5
    dilation_kernel: Tuple[int, int] = (1, 2)
    head_labels: Sequence[int] = LIP_HEAD
    left_leg_labels: Sequence[int] = LIP_LEFT_LEG
    right_leg_labels: Sequence[int] = LIP_RIGHT_LEG
    pants_labels: Sequence[int] = LIP_PANTS

    @classmethod
    def preset(cls, label_set: str, **overrides) -> "PriorConfig":
        """The config for parsing maps in one of :data:`LABEL_MAPS` (``lip``, ``atr``,
        ``pascal``), with the head / leg label ids of :data:`LABEL_PRESETS`.

        Examples::

            >>> PriorConfig.preset("atr").head_labels
            (1, 2, 3, 11)
        """
        if label_set not in LABEL_PRESETS:
            raise ValueError(f"unknown parsing label set '{label_set}': use one of "
                             f"{sorted(LABEL_PRESETS)} (or set head_labels etc. yourself)")
        return cls(**dict(LABEL_PRESETS[label_set], **overrides))


@dataclass
class CoarsePrior:
    """What the model consumes (Fig. 5): M at feature-map size and the ROI.

    Attributes:
        mask (ndarray): (Hf, Wf) float32 in {0, 1}.
        top, bottom (float): ROI boundaries as fractions of the image height, top < bottom.
        case (str): ``prior`` or ``fallback``.
    """
    mask: np.ndarray
    top: float
    bottom: float
    case: str

    def __post_init__(self):
        if not (0.0 <= self.top < self.bottom <= 1.0):
            raise ValueError(f"invalid ROI: top={self.top}, bottom={self.bottom}")
        if self.case not in CASES:
            raise ValueError(f"case must be one of {CASES}, got '{self.case}'")

    @classmethod
    def fallback(cls, feature_size: Tuple[int, int]) -> "CoarsePrior":
        return cls(np.ones(feature_size, np.float32), 0.0, 1.0, "fallback")


def feature_size_for(input_hw: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """Feature-map size of a backbone with ``stride`` (its ``Backbone.stride``, e.g. 16 for
    ResNet with last stride 1: ``mpn_plugin.models.feature_stride(cfg)``)."""
    return (input_hw[0] // stride, input_hw[1] // stride)


def evidence_from_parsing(label_map: Optional[np.ndarray], cfg: PriorConfig = PriorConfig()
                          ) -> Tuple[bool, bool]:
    """(head_present, legs_present) from a parsing label map by pixel counts (Sec. 3.2)."""
    if label_map is None:
        return False, False
    n = label_map.size
    head = np.isin(label_map, cfg.head_labels).sum() / n >= cfg.head_min_fraction
    left = np.isin(label_map, cfg.left_leg_labels)
    right = np.isin(label_map, cfg.right_leg_labels)
    if cfg.pants_count_as_legs:
        rows = np.nonzero((label_map > 0).any(1))[0]
        if len(rows):
            low = np.zeros_like(left)
            low[rows[0] + int(0.75 * (rows[-1] + 1 - rows[0])):] = True
            pants_low = np.isin(label_map, cfg.pants_labels) & low
            left, right = left | pants_low, right | pants_low
    legs = max(left.sum(), right.sum()) / n >= cfg.leg_min_fraction
    return bool(head), bool(legs)


# COCO-17 keypoints: 0 nose, 1-2 eyes, 3-4 ears, 13-14 knees, 15-16 ankles
COCO_HEAD = (0, 1, 2, 3, 4)
COCO_LEFT_LEG = (13, 15)
COCO_RIGHT_LEG = (14, 16)


def evidence_from_keypoints(keypoints: np.ndarray, min_score: float = 0.3,
                            image_hw: Optional[Tuple[int, int]] = None) -> Tuple[bool, bool]:
    """(head_present, legs_present) from COCO-17 keypoints (J, 3) = x, y, score: a head
    keypoint and both knee+ankle of one side above ``min_score`` and inside the image."""
    kp = np.asarray(keypoints, np.float32)

    def ok(j):
        x, y, s = kp[j]
        inside = image_hw is None or (0 <= x < image_hw[1] and 0 <= y < image_hw[0])
        return s >= min_score and inside

    head = any(ok(j) for j in COCO_HEAD)
    legs = all(ok(j) for j in COCO_LEFT_LEG) or all(ok(j) for j in COCO_RIGHT_LEG)
    return head, legs


FALLBACK_REASONS = ("tool_error", "no_tool_output", "no_detection", "no_head", "no_legs",
                    "no_head_no_legs", "empty_mask")


def fallback_reason(case: str, info: dict) -> str:
    """Why an image got the fallback prior, from the stage-1 ``info`` of an adapter ("" for a
    prior): ``tool_error`` (the tool raised), ``no_tool_output`` (no label file / mask for
    the image), ``no_detection`` (the tool ran but found no person, e.g. no pose),
    ``no_head``, ``no_legs``, ``no_head_no_legs``, or ``empty_mask`` (head and legs found but
    the person mask is empty at feature size)."""
    if case == "prior":
        return ""
    if "error" in info:
        return "tool_error"
    if info.get("missing") or info.get("keypoints") is False or info.get("masks") == 0:
        return "no_tool_output"
    if info.get("detected") is False:
        return "no_detection"
    head, legs = info.get("head"), info.get("legs")
    if head is False and legs is False:
        return "no_head_no_legs"
    if head is False:
        return "no_head"
    if legs is False:
        return "no_legs"
    return "empty_mask"


def union_person_mask(head_present: bool, legs_present: bool,
                      person_masks: Iterable[Optional[np.ndarray]]
                      ) -> Tuple[Optional[np.ndarray], str]:
    """Stage 1, steps (a)-(b): the union of the tools' person masks (bool, image resolution),
    or ``(None, 'fallback')`` when the head or both legs are missing or no mask is usable."""
    if not (head_present and legs_present):
        return None, "fallback"
    masks = [np.asarray(m) > 0 for m in person_masks if m is not None]
    if not masks:
        return None, "fallback"
    shape = masks[0].shape
    union = np.zeros(shape, bool)
    for m in masks:
        if m.shape != shape:
            m = cv2.resize(m.astype(np.uint8), (shape[1], shape[0]),
                           interpolation=cv2.INTER_NEAREST) > 0
        union |= m
    if not union.any():
        return None, "fallback"
    return union, "prior"


def coarse_prior_from_mask(mask_img: Optional[np.ndarray], feature_size: Tuple[int, int],
                           cfg: PriorConfig = PriorConfig()) -> CoarsePrior:
    """Stage 2, steps (c)-(e): feature-size M and the ROI from an image-resolution mask.

    Args:
        mask_img (ndarray or None): (H, W) bool or float in [0, 1]; None = fallback.
        feature_size (tuple): (Hf, Wf) of the backbone's feature map.

    Examples::

        >>> m = np.zeros((8, 4)); m[2:6, 1:3] = 1
        >>> p = coarse_prior_from_mask(m, (4, 2))
        >>> p.mask.tolist(), p.top, p.bottom
        ([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]], 0.25, 0.75)
    """
    Hf, Wf = feature_size
    if mask_img is None:
        return CoarsePrior.fallback(feature_size)
    m = np.asarray(mask_img, np.float32)
    cover = cv2.resize(m, (Wf, Hf), interpolation=cv2.INTER_AREA)         # (c)
    binary = (cover >= cfg.binarize_threshold).astype(np.uint8)           # (d)
    kr, kc = cfg.dilation_kernel
    binary = cv2.dilate(binary, np.ones((kr, kc), np.uint8))
    rows = np.nonzero(binary.any(1))[0]                                   # (e)
    if len(rows) == 0:
        return CoarsePrior.fallback(feature_size)
    return CoarsePrior(binary.astype(np.float32), rows[0] / Hf, (rows[-1] + 1) / Hf, "prior")


def compute_coarse_prior(head_present: bool, legs_present: bool,
                         person_masks: Iterable[Optional[np.ndarray]],
                         feature_size: Tuple[int, int], cfg: PriorConfig = PriorConfig()
                         ) -> CoarsePrior:
    """The whole pipeline of Fig. 5a for one image (stages 1 + 2, no augmentation)."""
    mask, _ = union_person_mask(head_present, legs_present, person_masks)
    return coarse_prior_from_mask(mask, feature_size, cfg)
