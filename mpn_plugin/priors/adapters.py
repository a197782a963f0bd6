"""Tool adapters: turn what outside tools give for one image into stage-1 output
``(mask_image or None, case, info)`` of :mod:`mpn_plugin.priors.pipeline`.

* :class:`SyntheticMapsAdapter`: the synthetic dataset's own parsing / segmentation maps;
* :class:`ParsingFolderAdapter`: your own tool outputs: folders of parsing label maps
  (LIP/ATR-style PNGs, e.g. from the human parsing model [44]) and foreground masks ([45]),
  matched to the images by relative path;
* :class:`KeypointsAdapter`: COCO-17 keypoints per image (JSON), optionally with masks;
* :mod:`mpn_plugin.priors.importers`: bpbreid's part-confidence ``.npy`` files and KPR's
  keypoint JSONs;
* ``mediapipe_adapter.MediapipeAdapter`` (separate environment, see third_party/README.md).

Only numpy and OpenCV are needed here.
"""
from __future__ import annotations

import json
import os.path as osp
from typing import Dict, Optional, Tuple

import cv2
import numpy as np

from .pipeline import PriorConfig, evidence_from_keypoints, evidence_from_parsing, union_person_mask

StageOne = Tuple[Optional[np.ndarray], str, Dict]


def _read_map(path: str) -> Optional[np.ndarray]:
    if not osp.isfile(path):
        return None
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)


def read_label_map(path: str) -> Optional[np.ndarray]:
    """A parsing label map (H, W) of label ids, or None when there is no such file.

    Palette PNGs (what SCHP and most parsing tools write: mode ``P``) keep their indices;
    OpenCV would expand them to the palette colours. Grey PNGs are read as they are.

    Raises:
        ValueError: a colour image that is not a label map (e.g. a visualisation).
    """
    if not osp.isfile(path):
        return None
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        arr = np.array(im)
    if arr.ndim == 3:
        if mode in ("RGB", "RGBA") and (arr[..., :3] == arr[..., :1]).all():
            return arr[..., 0]
        raise ValueError(f"'{path}' is a {mode} colour image, not a label map: a parsing map must "
                         f"store one label id per pixel (a palette or greyscale PNG, as SCHP's "
                         f"simple_extractor.py writes); colour visualisations cannot be read")
    return arr


def find_beside(folder: str, relpath: str, suffixes) -> Optional[str]:
    """The tool output of image ``relpath`` in ``folder``: the first existing
    ``<folder>/<p><suffix>`` for ``p`` = the relpath without extension (a mirrored tree), then
    ``<parent folder name>/<stem>`` (bpbreid / KPR layout), then ``<stem>`` (a flat folder)."""
    stem = osp.splitext(relpath)[0]
    parent = osp.basename(osp.dirname(relpath))
    name = osp.basename(stem)
    for base in dict.fromkeys([stem, osp.join(parent, name), name]):
        for suffix in suffixes:
            path = osp.join(folder, base + suffix)
            if osp.isfile(path):
                return path
    return None


def keypoint_rows_mask(keypoints: np.ndarray, image_hw: Tuple[int, int], min_score: float,
                       head_margin: float = 0.08,
                       foot_margin: float = 0.04) -> Optional[np.ndarray]:
    """A full-width person mask from the rows the keypoints span: from the topmost keypoint
    (minus ``head_margin`` x their height) to the lowest (plus ``foot_margin``); None when no
    keypoint reaches ``min_score``."""
    H, W = image_hw
    good = keypoints[keypoints[:, 2] >= min_score]
    if not len(good):
        return None
    span = good[:, 1].max() - good[:, 1].min()
    y0 = int(np.clip(good[:, 1].min() - head_margin * span, 0, H - 1))
    y1 = int(np.clip(np.ceil(good[:, 1].max() + foot_margin * span), 0, H))
    fg = np.zeros((H, W), bool)
    fg[y0:max(y1, y0 + 1)] = True
    return fg


def image_size(image_path: str) -> Tuple[int, int]:
    """(H, W) of an image file, from its header (the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(image_path) as im:
            return im.height, im.width
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read image '{image_path}' "
                         f"({type(exc).__name__}: {exc})") from None


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
        info = {"head": head, "legs": legs, "parsing": parsing is not None,
                "segmentation": seg is not None}
        if parsing is None:
            info["missing"] = stem + "_parsing.png"
        return mask, case, info


class ParsingFolderAdapter:
    """Bring your own tool outputs: parsing label maps (e.g. SCHP's palette PNGs in the LIP,
    ATR or Pascal-Person-Part label set) and optional foreground masks, found by
    :func:`find_beside` (mirrored tree, ``<split>/<stem>``, or flat folder).

    Args:
        parsing_dir (str): folder of label maps.
        mask_dir (str, optional): foreground masks (non-zero = person), same naming.
        suffix (str): file name ending of the maps (``.png``).
        config (PriorConfig): label ids (LIP by default; ``PriorConfig.preset("atr")``...).

    Examples::

        >>> adapter = ParsingFolderAdapter("data/market_schp_atr", config=PriorConfig.preset("atr"))
        >>> mask, case, info = adapter(image_path, relpath)
    """
    name, version = "parsing_folder", "2"

    def __init__(self, parsing_dir: str, mask_dir: str = "", suffix: str = ".png",
                 config: PriorConfig = PriorConfig()):
        for what, folder in (("parsing", parsing_dir), ("mask", mask_dir)):
            if folder and not osp.isdir(folder):  # a typo would give 100% fallback priors
                raise FileNotFoundError(f"{what} folder '{folder}' (--{what}-dir) does not exist: "
                                        f"give the folder holding the {what} maps")
        self.parsing_dir, self.mask_dir = parsing_dir, mask_dir
        self.suffix, self.config = suffix, config

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        found = find_beside(self.parsing_dir, relpath, (self.suffix,))
        parsing = read_label_map(found) if found else None
        fg = None
        if self.mask_dir:
            mask_path = find_beside(self.mask_dir, relpath, (self.suffix,))
            fg = _read_map(mask_path) if mask_path else None
            if fg is not None and fg.ndim == 3:
                fg = fg.max(-1)
        head, legs = evidence_from_parsing(parsing, self.config)
        mask, case = union_person_mask(head, legs, [fg, None if parsing is None else parsing > 0])
        info = {"head": head, "legs": legs}
        if parsing is None:
            info["missing"] = osp.join(self.parsing_dir, osp.splitext(relpath)[0] + self.suffix)
        return mask, case, info


class KeypointsAdapter:
    """COCO-17 keypoints: one JSON file mapping relpath -> [[x, y, score] * 17] (pixels).

    Presence: :func:`~mpn_plugin.priors.pipeline.evidence_from_keypoints`. Person mask: the
    matching file of ``mask_dir`` when given, else :func:`keypoint_rows_mask` (a rectangle:
    only the ROI is informative then).
    """
    name, version = "keypoints", "1"

    def __init__(self, keypoints_file: str, mask_dir: str = "", min_score: float = 0.3,
                 head_margin: float = 0.08, foot_margin: float = 0.04):
        with open(keypoints_file) as f:
            self.keypoints = {k: np.asarray(v, np.float32) for k, v in json.load(f).items()}
        self.mask_dir, self.min_score = mask_dir, min_score
        self.head_margin, self.foot_margin = head_margin, foot_margin

    def stage_one(self, kp: Optional[np.ndarray], image_path: str, relpath: str) -> StageOne:
        """Stage 1 from the (17, 3) keypoints of the person (None = no keypoints)."""
        if kp is None:
            return None, "fallback", {"keypoints": False}
        hw = image_size(image_path)
        head, legs = evidence_from_keypoints(kp, self.min_score, hw)
        if self.mask_dir:
            mask_path = find_beside(self.mask_dir, relpath, (".png",))
            fg = _read_map(mask_path) if mask_path else None
        else:
            fg = keypoint_rows_mask(kp, hw, self.min_score, self.head_margin, self.foot_margin)
        mask, case = union_person_mask(head, legs, [fg])
        return mask, case, {"head": head, "legs": legs}

    def __call__(self, image_path: str, relpath: str) -> StageOne:
        return self.stage_one(self.keypoints.get(relpath), image_path, relpath)
