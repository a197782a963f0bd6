"""Importers of existing part labels, on small files written here in the tools' own formats:
bpbreid's 36-channel PifPaf part-confidence .npy, KPR's keypoint JSONs (several people), SCHP's
palette PNGs in the LIP / ATR / Pascal-Person-Part label sets."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
from PIL import Image

from mpn_plugin.cli import generate_priors
from mpn_plugin.priors.adapters import ParsingFolderAdapter
from mpn_plugin.priors.importers import (
    PIFPAF_PARTS,
    BpbreidPartMasksAdapter,
    KprKeypointsAdapter,
    kpr_target_keypoints,
)
from mpn_plugin.priors.pipeline import PriorConfig, coarse_prior_from_mask, fallback_reason

H, W = 128, 64
REL = "bounding_box_train/0002_c1s1_000451_03.jpg"


def write_image(root, rel=REL):
    path = osp.join(root, rel)
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full((H, W, 3), 90, np.uint8))
    return path


# ---------------------------------------------------------------- bpbreid (PifPaf .npy)
def pifpaf_fields(with_ankles=True, h=32, w=16):
    """(36, h, w) confidences as bpbreid stores them: a person over rows 4..29, cols 5..10."""
    f = np.zeros((len(PIFPAF_PARTS), h, w), np.float32)
    spots = {"nose": (5, 8), "left_eye": (4, 7), "left_knee": (22, 7), "right_knee": (22, 9),
             "left_ankle": (28, 7), "right_ankle": (28, 9)}
    for name, (r, c) in spots.items():
        if with_ankles or "ankle" not in name:
            f[PIFPAF_PARTS.index(name), r, c] = 0.9
    f[PIFPAF_PARTS.index("left_shoulder-left_hip"), 8:18, 5:11] = 0.8   # a limb field
    f[PIFPAF_PARTS.index("left_ankle-left_knee"), 18:30, 6:9] = 0.7
    return f


def test_bpbreid_part_confidence_npy(tmp_path):
    img = write_image(str(tmp_path / "images"))
    masks = tmp_path / "masks" / "pifpaf_maskrcnn_filtering"
    (masks / "bounding_box_train").mkdir(parents=True)
    np.save(masks / "bounding_box_train" / "0002_c1s1_000451_03.npy", pifpaf_fields())
    adapter = BpbreidPartMasksAdapter(str(masks))
    mask, case, info = adapter(img, REL)
    assert case == "prior" and info == {"head": True, "legs": True}
    assert mask.shape == (H, W)                       # image resolution, not the file's 32x16
    rows = np.nonzero(mask.any(1))[0]
    # union of the fields: rows 4..29 of 32 (nose at row 4 is a single 0.9 cell) -> x4 in pixels
    assert 14 <= rows[0] <= 20 and 116 <= rows[-1] <= 122
    cols = np.nonzero(mask.any(0))[0]
    assert 18 <= cols[0] <= 22 and 42 <= cols[-1] <= 46
    prior = coarse_prior_from_mask(mask, (8, 4))
    # the head is two PifPaf cells: less than half of a feature cell's area at row 1 of 8
    assert prior.case == "prior" and 0.125 <= prior.top <= 0.25 and prior.bottom == 0.875


def test_bpbreid_no_ankles_is_no_legs_and_raw_pifpaf_suffix(tmp_path):
    img = write_image(str(tmp_path / "images"))
    masks = tmp_path / "pifpaf" / "bounding_box_train"
    masks.mkdir(parents=True)
    # the raw PifPaf set is named <stem>.jpg.confidence_fields.npy
    np.save(masks / "0002_c1s1_000451_03.jpg.confidence_fields.npy",
            pifpaf_fields(with_ankles=False))
    mask, case, info = BpbreidPartMasksAdapter(str(tmp_path / "pifpaf"))(img, REL)
    assert (mask, case) == (None, "fallback") and info == {"head": True, "legs": False}
    assert fallback_reason(case, info) == "no_legs"
    # no file for the image: a fallback saying so
    mask, case, info = BpbreidPartMasksAdapter(str(tmp_path / "none"))(img, REL)
    assert case == "fallback" and fallback_reason(case, info) == "no_tool_output"


def test_bpbreid_wrong_array_is_named(tmp_path):
    img = write_image(str(tmp_path / "images"))
    (tmp_path / "m" / "bounding_box_train").mkdir(parents=True)
    bad = tmp_path / "m" / "bounding_box_train" / "0002_c1s1_000451_03.npy"
    np.save(bad, np.zeros((17, 8, 4), np.float32))
    with pytest.raises(ValueError, match=r"0002_c1s1_000451_03.npy.*\(36, h, w\)"):
        BpbreidPartMasksAdapter(str(tmp_path / "m"))(img, REL)


# ---------------------------------------------------------------- KPR keypoint JSONs
def person(top, bottom, x, visible_legs=True):
    """COCO-17 keypoints of a standing person from row ``top`` (nose) to ``bottom`` (ankles)."""
    kp = np.zeros((17, 3))
    ys = np.linspace(top, bottom, 17)
    kp[:, 0], kp[:, 1], kp[:, 2] = x, ys, 0.9
    if not visible_legs:
        kp[13:, 2] = 0.0
    return kp.tolist()


def test_kpr_target_is_picked_as_kpr_does():
    a, b = person(10, 100, 20), person(40, 120, 40)
    # the entry flagged is_target, wherever it is
    assert kpr_target_keypoints([{"keypoints": a, "is_target": False},
                                 {"keypoints": b, "is_target": True}])[0, 1] == 40
    # no is_target anywhere: the first person
    assert kpr_target_keypoints([{"keypoints": a}, {"keypoints": b}])[0, 1] == 10
    # a single object; flat 51-value keypoints
    assert kpr_target_keypoints({"keypoints": np.ravel(b).tolist()}).shape == (17, 3)
    assert kpr_target_keypoints([]) is None
    assert kpr_target_keypoints([{"keypoints": a, "is_target": False}]) is None


def test_kpr_keypoints_json_several_people(tmp_path):
    img = write_image(str(tmp_path / "images"))
    kp_dir = tmp_path / "external_annotation" / "pifpaf_keypoints_pifpaf_maskrcnn_filtering"
    (kp_dir / "bounding_box_train").mkdir(parents=True)
    # an occluder whose whole body is visible, and the target cut at the knees
    people = [{"keypoints": person(0, 127, 10), "is_target": False},
              {"keypoints": person(30, 110, 40, visible_legs=False), "is_target": True}]
    path = kp_dir / "bounding_box_train" / "0002_c1s1_000451_03.jpg_keypoints.json"
    path.write_text(json.dumps(people))
    adapter = KprKeypointsAdapter(str(kp_dir))
    mask, case, info = adapter(img, REL)
    assert case == "fallback" and info == {"head": True, "legs": False}   # the target's legs
    people[1]["keypoints"] = person(30, 110, 40)
    path.write_text(json.dumps(people))
    mask, case, info = adapter(img, REL)
    rows = np.nonzero(mask.any(1))[0]
    assert case == "prior" and rows[0] == int(30 - 0.08 * 80) and rows[-1] == 113  # target rows
    path.write_text(json.dumps([{"people": []}]))
    with pytest.raises(ValueError, match="is not a KPR keypoint file"):
        adapter(img, REL)


# ---------------------------------------------------------------- SCHP parsing PNGs
def schp_png(path, labels, palette_colour=(220, 20, 60)):
    """A label map saved as SCHP's simple_extractor.py does: mode P with a colour palette."""
    im = Image.fromarray(labels.astype(np.uint8))
    palette = [0, 0, 0] + list(palette_colour) * 255
    im.putpalette(palette[:768])
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    im.save(path)


def body(label_set):
    """A label map of a whole person in ``label_set`` ids."""
    lab = np.zeros((H, W), np.uint8)
    ids = {"lip": dict(hair=2, face=13, upper=5, pants=9, lleg=16, rleg=17, lshoe=18, rshoe=19),
           "atr": dict(hair=2, face=11, upper=4, pants=6, lleg=12, rleg=13, lshoe=9, rshoe=10),
           "pascal": dict(hair=1, face=1, upper=2, pants=5, lleg=6, rleg=6, lshoe=6, rshoe=6),
           }[label_set]
    lab[10:20, 24:40], lab[20:30, 26:38] = ids["hair"], ids["face"]
    lab[30:70, 20:44], lab[70:95, 22:42] = ids["upper"], ids["pants"]
    lab[95:115, 22:30], lab[95:115, 34:42] = ids["lleg"], ids["rleg"]
    lab[115:122, 22:30], lab[115:122, 34:42] = ids["lshoe"], ids["rshoe"]
    return lab


@pytest.mark.parametrize("label_set", ["lip", "atr", "pascal"])
def test_schp_palette_pngs_with_label_presets(tmp_path, label_set):
    img = write_image(str(tmp_path / "images"))
    # a flat SCHP output folder: <stem>.png
    schp_png(str(tmp_path / "schp" / "0002_c1s1_000451_03.png"), body(label_set))
    adapter = ParsingFolderAdapter(str(tmp_path / "schp"), config=PriorConfig.preset(label_set))
    mask, case, info = adapter(img, REL)
    assert case == "prior" and info == {"head": True, "legs": True}
    rows = np.nonzero(mask.any(1))[0]
    assert (rows[0], rows[-1]) == (10, 121)


def test_label_presets_name_the_right_parts():
    from mpn_plugin.priors.pipeline import LABEL_MAPS, LABEL_PRESETS
    for name, preset in LABEL_PRESETS.items():
        labels = LABEL_MAPS[name]
        head = {labels[i] for i in preset["head_labels"]}
        assert head <= {"hat", "hair", "sunglasses", "face", "head"} and head
        legs = {labels[i]
                for i in tuple(preset["left_leg_labels"]) + tuple(preset["right_leg_labels"])}
        assert legs <= {"left-leg", "right-leg", "left-shoe", "right-shoe", "lower-legs"} and legs
    assert (len(LABEL_MAPS["lip"]) == 20 and len(LABEL_MAPS["atr"]) == 18
            and len(LABEL_MAPS["pascal"]) == 7)


def test_wrong_label_set_and_cut_legs_fall_back(tmp_path):
    img = write_image(str(tmp_path / "images"))
    schp_png(str(tmp_path / "pascal_all" / "0002_c1s1_000451_03.png"), body("pascal"))
    # Pascal-Person-Part maps read with the default LIP ids: lower legs (6) are LIP's dress
    _, case, info = ParsingFolderAdapter(str(tmp_path / "pascal_all"))(img, REL)
    assert case == "fallback" and info["legs"] is False
    # Pascal-Person-Part cut above the knees: upper legs only
    lab = body("pascal")
    lab[95:] = 0
    lab[85:95, 22:42] = 5
    schp_png(str(tmp_path / "pascal" / "0002_c1s1_000451_03.png"), lab)
    adapter = ParsingFolderAdapter(str(tmp_path / "pascal"), config=PriorConfig.preset("pascal"))
    _, case, info = adapter(img, REL)
    assert case == "fallback" and info == {"head": True, "legs": False}
    with pytest.raises(ValueError, match="unknown parsing label set 'coco'"):
        PriorConfig.preset("coco")


def test_colour_visualisation_is_rejected_with_the_file_named(tmp_path):
    img = write_image(str(tmp_path / "images"))
    colour = np.zeros((H, W, 3), np.uint8)
    colour[10:120, 20:40] = (220, 20, 60)
    Image.fromarray(colour).save(tmp_path / "0002_c1s1_000451_03.png")
    with pytest.raises(ValueError, match="0002_c1s1_000451_03.png' is a RGB colour image"):
        ParsingFolderAdapter(str(tmp_path))(img, REL)


def test_generate_priors_runs_each_importer(tmp_path):
    """The importers as --adapter of generate_priors.py, on a two-image folder."""
    images = tmp_path / "crops"
    for rel in (REL, "bounding_box_train/0003_c1s1_000001_00.jpg"):
        write_image(str(images), rel)
    np.save(tmp_path / "0002_c1s1_000451_03.npy", pifpaf_fields())         # flat folder
    (tmp_path / "kp").mkdir()
    (tmp_path / "kp" / "0002_c1s1_000451_03.jpg_keypoints.json").write_text(
        json.dumps([{"keypoints": person(20, 110, 30)}]))
    schp_png(str(tmp_path / "atr" / "bounding_box_train" / "0002_c1s1_000451_03.png"), body("atr"))
    runs = {"bpbreid": ["--part-masks-dir", str(tmp_path)],
            "kpr": ["--keypoints-dir", str(tmp_path / "kp")],
            "parsing": ["--parsing-dir", str(tmp_path / "atr"), "--labels", "atr"]}
    for adapter, extra in runs.items():
        s = generate_priors.main(["--images", str(images), "--adapter", adapter, "--height", "128",
                                  "--width", "64", "--workers", "1", "--max-fallback-share", "1"]
                                 + extra)
        assert (s["images"], s["fallbacks"]) == (2, 1), adapter
        from mpn_plugin.priors import PriorCache
        cache = PriorCache.load(s["path"])
        assert cache.get(REL).case == "prior"
        assert cache.header["fallback_reasons"] == {"bounding_box_train/0003_c1s1_000001_00.jpg":
                                                    "no_tool_output"}
        assert "--adapter " + adapter in cache.header["command"]
