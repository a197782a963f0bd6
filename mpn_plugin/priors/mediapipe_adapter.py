"""Built-in offline prior generator for real crops: mediapipe 0.10.21 (models inside the wheel).

* person masks: ``SelfieSegmentation(model_selection=0)`` and the segmentation of
  ``Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True)``, unioned (the
  paper's union of two complementary tools, Sec. 3.2), on the crop upscaled ``upscale`` times;
* head / leg presence from the pose landmarks, conservatively: Pose hallucinates heads on
  head-cut crops and legs behind bicycles, so a landmark counts only when it is visible
  (``visibility >= min_visibility``), inside the image, on the person mask, and near the
  mask's top (head) or bottom (knee + ankle of one side).

Runs in its own environment (``bash third_party/mediapipe_env.sh``): mediapipe pins numpy<2
and protobuf<5. Imports only numpy, OpenCV and mediapipe (loaded lazily, per process).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

HEAD_LANDMARKS = (0, 2, 5)            # nose, eyes
LEG_SIDES = ((25, 27), (26, 28))      # (knee, ankle) left, right


class MediapipeAdapter:
    """Stage-1 output ``(mask or None, case, info)`` for one crop (see module docstring).

    Args:
        upscale (int): crops are enlarged this many times before the models run (64x128
            pedestrian crops are far below what the models were trained on).
        min_visibility (float): landmark visibility threshold.
        head_zone (float): a head landmark must lie in this top share of the mask's rows.
        leg_zone (float): an ankle must lie in this bottom share of the mask's rows.
        mask_threshold (float): binarisation of the models' soft masks.
    """
    name = "mediapipe"

    def __init__(self, upscale: int = 3, min_visibility: float = 0.5, head_zone: float = 0.3,
                 leg_zone: float = 0.25, mask_threshold: float = 0.5):
        self.upscale, self.min_visibility = upscale, min_visibility
        self.head_zone, self.leg_zone, self.mask_threshold = head_zone, leg_zone, mask_threshold
        self._models = None
        self._pid = None
        try:
            import mediapipe
            self.version = f"mediapipe-{mediapipe.__version__}"
        except ImportError:
            self.version = "mediapipe-unavailable"

    def _load(self):
        if self._models is None or self._pid != os.getpid():
            import mediapipe as mp
            self._models = (
                mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0),
                mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                       enable_segmentation=True))
            self._pid = os.getpid()
        return self._models

    def evidence(self, landmarks, mask: np.ndarray) -> Tuple[bool, bool]:
        """Conservative head / leg presence from normalised landmarks and the person mask."""
        if landmarks is None or not mask.any():
            return False, False
        H, W = mask.shape
        rows = np.nonzero(mask.any(1))[0]
        top, bottom = rows[0], rows[-1] + 1
        span = bottom - top
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0

        def ok(i, zone):
            lm = landmarks[i]
            x, y = lm.x * W, lm.y * H
            if lm.visibility < self.min_visibility or not (0 <= x < W and 0 <= y < H):
                return False
            if not near[int(y), int(x)]:
                return False
            if zone == "head":
                return y <= top + self.head_zone * span
            if zone == "foot":
                return y >= bottom - self.leg_zone * span
            return True

        head = any(ok(i, "head") for i in HEAD_LANDMARKS)
        legs = any(ok(knee, "any") and ok(ankle, "foot") for knee, ankle in LEG_SIDES)
        return head, legs

    def __call__(self, image_path: str,
                 relpath: str = "") -> Tuple[Optional[np.ndarray], str, Dict]:
        bgr = cv2.imread(image_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read image '{image_path}'")
        H, W = bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(bgr, (W * self.upscale, H * self.upscale),
                                      interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        selfie, pose = self._load()
        masks = []
        s = selfie.process(rgb).segmentation_mask
        if s is not None:
            masks.append(s)
        p = pose.process(rgb)
        if p.segmentation_mask is not None:
            masks.append(p.segmentation_mask)
        if not masks:
            return None, "fallback", {"masks": 0}
        soft = np.maximum.reduce([cv2.resize(m, (W, H), interpolation=cv2.INTER_AREA)
                                  for m in masks])
        union = soft >= self.mask_threshold
        landmarks = p.pose_landmarks.landmark if p.pose_landmarks else None
        head, legs = self.evidence(landmarks, union)
        info = {"head": head, "legs": legs, "detected": landmarks is not None}
        if not (head and legs and union.any()):
            return None, "fallback", info
        return union, "prior", info
