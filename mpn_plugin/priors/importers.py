"""Importers for part labels people already have, as stage-1 adapters of ``generate_priors.py``.

* :class:`BpbreidPartMasksAdapter` (``--adapter bpbreid``): bpbreid's PifPaf part-confidence
  files, ``<masks dir>/<split folder>/<stem>.npy`` (``pifpaf_maskrcnn_filtering``) or
  ``<stem>.jpg.confidence_fields.npy`` (``pifpaf``), each a float array (36, h, w): 17 COCO
  keypoint confidence fields then 19 limb ("joint") fields (:data:`PIFPAF_PARTS`), at a lower
  resolution than the image. The person mask is the union of the 36 fields (max >=
  ``mask_threshold``, at image size); head / legs presence comes from the keypoint fields (peak
  >= ``keypoint_threshold``) by the rule of
  :func:`~mpn_plugin.priors.pipeline.evidence_from_keypoints`.
* :class:`KprKeypointsAdapter` (``--adapter kpr``): KPR's keypoint files,
  ``<keypoints dir>/<split folder>/<stem>.jpg_keypoints.json``: a list of people, each
  ``{"keypoints": [[x, y, c] * 17], "is_target": bool}`` (pixels of the crop), or one such
  object. The target is picked as KPR does (:func:`kpr_target_keypoints`).
* Human-parsing PNGs (SCHP, LIP / ATR / Pascal-Person-Part): ``--adapter parsing --labels
  lip|atr|pascal``, i.e. :class:`~mpn_plugin.priors.adapters.ParsingFolderAdapter` with
  :meth:`PriorConfig.preset <mpn_plugin.priors.pipeline.PriorConfig.preset>`.

Files are found by :func:`~mpn_plugin.priors.adapters.find_beside` (a mirrored tree, the
``<split folder>/<stem>`` layout of bpbreid / KPR, or a flat folder). Only numpy and OpenCV are
needed (no torch).
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np

from .adapters import KeypointsAdapter, StageOne, find_beside, image_size
from .pipeline import evidence_from_keypoints, union_person_mask

__all__ = ["PIFPAF_KEYPOINTS", "PIFPAF_JOINTS", "PIFPAF_PARTS", "BpbreidPartMasksAdapter",
           "KprKeypointsAdapter", "kpr_target_keypoints", "read_part_confidence"]

PIFPAF_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
PIFPAF_JOINTS = ("left_ankle-left_knee", "left_knee-left_hip", "right_ankle-right_knee",
                 "right_knee-right_hip", "left_hip-right_hip", "left_shoulder-left_hip",
                 "right_shoulder-right_hip", "left_shoulder-right_shoulder",
                 "left_shoulder-left_elbow", "right_shoulder-right_elbow",
                 "left_elbow-left_wrist", "right_elbow-right_wrist", "left_eye-right_eye",
                 "nose-left_eye", "nose-right_eye", "left_eye-left_ear", "right_eye-right_ear",
                 "left_ear-left_shoulder", "right_ear-right_shoulder")
PIFPAF_PARTS = PIFPAF_KEYPOINTS + PIFPAF_JOINTS   # the 36 channels, in file order

BPBREID_SUFFIXES = (".npy", ".jpg.confidence_fields.npy")
KPR_SUFFIXES = (".jpg_keypoints.json", "_keypoints.json", ".json")


def read_part_confidence(path: str) -> np.ndarray:
    """bpbreid's part-confidence file as float32 (36, h, w).

    Raises:
        ValueError: not a 3-D array with 36 channels first (or last), naming the file.
    """
    fields = np.load(path, allow_pickle=False)
    n = len(PIFPAF_PARTS)
    if fields.ndim == 3 and fields.shape[0] != n and fields.shape[-1] == n:
        fields = np.moveaxis(fields, -1, 0)
    if fields.ndim != 3 or fields.shape[0] != n:
        raise ValueError(f"'{path}' has shape {fields.shape}: a bpbreid part-confidence file holds "
                         f"({n}, h, w) (17 PifPaf keypoint fields + 19 joint fields); other "
                         f"mask sets need their own adapter")
    return fields.astype(np.float32, copy=False)


class BpbreidPartMasksAdapter:
    """Stage 1 from bpbreid's 36-channel PifPaf part-confidence ``.npy`` files.

    Args:
        masks_dir (str): e.g. ``<dataset>/masks/pifpaf_maskrcnn_filtering``.
        mask_threshold (float): union of the fields >= this is the person (bpbreid's
            ``mask_filtering_threshold`` default, 0.3).
        keypoint_threshold (float): a keypoint field peaking at >= this counts as found.
        suffixes (sequence of str): file endings tried after the image stem.

    Examples::

        >>> adapter = BpbreidPartMasksAdapter(
        ...     "/data/Market-1501-v15.09.15/masks/pifpaf_maskrcnn_filtering")
        >>> mask, case, info = adapter(image_path, "bounding_box_train/0002_c1s1_000451_03.jpg")
    """
    name, version = "bpbreid_pifpaf", "1"

    def __init__(self, masks_dir: str, mask_threshold: float = 0.3,
                 keypoint_threshold: float = 0.3, suffixes: Sequence[str] = BPBREID_SUFFIXES):
        self.masks_dir, self.suffixes = masks_dir, tuple(suffixes)
        self.mask_threshold, self.keypoint_threshold = mask_threshold, keypoint_threshold

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        path = find_beside(self.masks_dir, relpath, self.suffixes)
        if path is None:
            return None, "fallback", {"missing": osp.join(self.masks_dir, osp.splitext(relpath)[0]
                                                          + self.suffixes[0])}
        fields = read_part_confidence(path)
        H, W = image_size(image_path)
        n, h, w = fields.shape
        # each keypoint at its field's peak, in image pixels, scored by the peak value
        flat = fields[:len(PIFPAF_KEYPOINTS)].reshape(len(PIFPAF_KEYPOINTS), -1)
        peak = flat.argmax(1)
        keypoints = np.stack([(peak % w + 0.5) * W / w, (peak // w + 0.5) * H / h,
                              flat.max(1)], 1)
        head, legs = evidence_from_keypoints(keypoints, self.keypoint_threshold, (H, W))
        union = cv2.resize(fields.max(0), (W, H), interpolation=cv2.INTER_LINEAR)
        mask, case = union_person_mask(head, legs, [union >= self.mask_threshold])
        return mask, case, {"head": head, "legs": legs}


def kpr_target_keypoints(skeletons) -> Optional[np.ndarray]:
    """The re-identification target's (17, 3) keypoints in a KPR keypoint file, chosen as KPR's
    reader does: a single object is the target; in a list, the entry with ``"is_target":
    true`` (the last one if several); entries without the field count as the target only
    when they come first (datasets annotated without it, e.g. Market-1501). None when the
    file lists nobody or no target.

    Examples::

        >>> kpr_target_keypoints([{"keypoints": [[0, 0, 0]] * 17, "is_target": False},
        ...                       {"keypoints": [[5, 9, 1]] * 17, "is_target": True}])[0]
        array([5., 9., 1.], dtype=float32)
    """
    if not skeletons:
        return None
    if isinstance(skeletons, dict):
        skeletons = [dict(skeletons, is_target=True)]
    target = None
    for i, person in enumerate(skeletons):
        if person.get("is_target", i == 0):
            target = person["keypoints"]
    if target is None:
        return None
    kp = np.asarray(target, np.float32)
    return kp.reshape(-1, 3) if kp.ndim == 1 else kp


class KprKeypointsAdapter(KeypointsAdapter):
    """Stage 1 from KPR-style per-image keypoint JSON files (several people per image).

    Presence and person mask as :class:`~mpn_plugin.priors.adapters.KeypointsAdapter`, for the
    target person of :func:`kpr_target_keypoints`.

    Args:
        keypoints_dir (str): e.g.
            ``<dataset>/external_annotation/pifpaf_keypoints_pifpaf_maskrcnn_filtering``.
        mask_dir (str, optional): foreground masks found by ``find_beside``.
        min_score (float): keypoint confidence threshold (KPR's ``vis_thresh``-like).

    Examples::

        >>> adapter = KprKeypointsAdapter(
        ...     "/data/Occluded_Duke/external_annotation/pifpaf_keypoints")
        >>> mask, case, info = adapter(image_path, "bounding_box_train/0001_c2_f0046182.jpg")
    """
    name, version = "kpr_keypoints", "1"

    def __init__(self, keypoints_dir: str, mask_dir: str = "", min_score: float = 0.3,
                 head_margin: float = 0.08, foot_margin: float = 0.04,
                 suffixes: Sequence[str] = KPR_SUFFIXES):
        self.keypoints_dir, self.suffixes = keypoints_dir, tuple(suffixes)
        self.mask_dir, self.min_score = mask_dir, min_score
        self.head_margin, self.foot_margin = head_margin, foot_margin

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        path = find_beside(self.keypoints_dir, relpath, self.suffixes)
        if path is None:
            return None, "fallback", {"keypoints": False, "missing": osp.join(
                self.keypoints_dir, osp.splitext(relpath)[0] + self.suffixes[0])}
        try:
            with open(path) as f:
                skeletons = json.load(f)
            kp = kpr_target_keypoints(skeletons)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"'{path}' is not a KPR keypoint file (a list of "
                             f"{{'keypoints': [[x, y, c] * 17], 'is_target': bool}}): "
                             f"{exc}") from exc
        if kp is not None and kp.shape != (17, 3):
            raise ValueError(f"'{path}': the target has keypoints of shape {kp.shape}, "
                             f"COCO-17 (17, 3) expected")
        return self.stage_one(kp, image_path, relpath)
