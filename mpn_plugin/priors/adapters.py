"""Tool adapters: turn what outside tools give for one image into stage-1 output
``(mask_image or None, case, info)`` of :mod:`mpn_plugin.priors.pipeline`.

* :class:`SyntheticMapsAdapter`: the synthetic dataset's own parsing / segmentation maps;
* :class:`ParsingFolderAdapter`: your own tool outputs: folders of parsing label maps
  (LIP/ATR-style PNGs, e.g. from the human parsing model [44]) and foreground masks ([45]),
  matched to the images by relative path;
* :class:`KeypointsAdapter`: COCO-17 keypoints per image (JSON), optionally with masks;
* ``mediapipe_adapter.MediapipeAdapter`` (separate environment, see third_party/README.md).

Only numpy and OpenCV are needed here.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .pipeline import (PriorConfig, evidence_from_keypoints, evidence_from_parsing,
                       union_person_mask)

StageOne = Tuple[Optional[np.ndarray], str, Dict]


def _read_map(path: str) -> Optional[np.ndarray]:
    if not osp.isfile(path):
        return None
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


class SyntheticMapsAdapter:
    """The synthetic dataset's ``maps/<split>/<stem>_{parsing,segmentation}.png``.

    The person masks unioned are the segmentation map and the parsing map's foreground (the
    paper's union of both tools). A missing parsing map means no head/leg evidence: fallback.
    """
    name, version = "synthetic", "1"

    def __init__(self, dataset_dir: str, config: PriorConfig = PriorConfig()):
        self.dataset_dir, self.config = dataset_dir, config

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        split, fname = osp.split(relpath)
        stem = osp.join(self.dataset_dir, "maps", split, osp.splitext(fname)[0])
        parsing = _read_map(stem + "_parsing.png")
        seg = _read_map(stem + "_segmentation.png")
        head, legs = evidence_from_parsing(parsing, self.config)
        masks = [seg, None if parsing is None else (parsing > 0)]
        mask, case = union_person_mask(head, legs, masks)
        return mask, case, {"head": head, "legs": legs, "parsing": parsing is not None,
                            "segmentation": seg is not None}


class ParsingFolderAdapter:
    """Bring your own tool outputs, matched to images by relative path.

    Args:
        parsing_dir (str): label maps at ``<parsing_dir>/<relpath without ext><suffix>``.
        mask_dir (str, optional): foreground masks (non-zero = person), same naming.
        suffix (str): file name ending of the maps (``.png``).
        config (PriorConfig): label sets (LIP by default; set ``head_labels`` etc. for ATR).
    """
    name, version = "parsing_folder", "1"

    def __init__(self, parsing_dir: str, mask_dir: str = "", suffix: str = ".png",
                 config: PriorConfig = PriorConfig()):
        self.parsing_dir, self.mask_dir, self.suffix, self.config = parsing_dir, mask_dir, suffix, config

    def _path(self, folder, relpath):
        return osp.join(folder, osp.splitext(relpath)[0] + self.suffix)

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        parsing = _read_map(self._path(self.parsing_dir, relpath))
        if parsing is not None and parsing.ndim == 3:
            parsing = parsing[..., 0]
        fg = _read_map(self._path(self.mask_dir, relpath)) if self.mask_dir else None
        if fg is not None and fg.ndim == 3:
            fg = fg.max(-1)
        head, legs = evidence_from_parsing(parsing, self.config)
        mask, case = union_person_mask(head, legs, [fg, None if parsing is None else parsing > 0])
        return mask, case, {"head": head, "legs": legs}


class KeypointsAdapter:
    """COCO-17 keypoints: one JSON file mapping relpath -> [[x, y, score] * 17] (pixels).

    Presence: :func:`~mpn_plugin.priors.pipeline.evidence_from_keypoints`. Person mask: the
    matching file of ``mask_dir`` when given, else the box from the topmost head keypoint
    (minus ``head_margin`` x the keypoints' height) to the lowest ankle (plus ``foot_margin``),
    full width (a rectangle: only the ROI is informative then).
    """
    name, version = "keypoints", "1"

    def __init__(self, keypoints_file: str, mask_dir: str = "", min_score: float = 0.3,
                 head_margin: float = 0.08, foot_margin: float = 0.04):
        with open(keypoints_file) as f:
            self.keypoints = {k: np.asarray(v, np.float32) for k, v in json.load(f).items()}
        self.mask_dir, self.min_score = mask_dir, min_score
        self.head_margin, self.foot_margin = head_margin, foot_margin

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        img = cv2.imread(image_path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"cannot read image '{image_path}'")
        H, W = img.shape[:2]
        kp = self.keypoints.get(relpath)
        if kp is None:
            return None, "fallback", {"keypoints": False}
        head, legs = evidence_from_keypoints(kp, self.min_score, (H, W))
        if self.mask_dir:
            fg = _read_map(osp.join(self.mask_dir, osp.splitext(relpath)[0] + ".png"))
        else:
            good = kp[kp[:, 2] >= self.min_score]
            fg = None
            if len(good):
                span = good[:, 1].max() - good[:, 1].min()
                y0 = int(max(0, good[:, 1].min() - self.head_margin * span))
                y1 = int(min(H, np.ceil(good[:, 1].max() + self.foot_margin * span)))
                fg = np.zeros((H, W), bool)
                fg[y0:max(y1, y0 + 1)] = True
        mask, case = union_person_mask(head, legs, [fg])
        return mask, case, {"head": head, "legs": legs}
