"""The coarse prior pipeline (Sec. 3.2, Fig. 5a), its cache and the tool adapters."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest

from mpn_plugin.priors import (
    CoarsePrior,
    PriorCache,
    PriorCacheWriter,
    PriorConfig,
    StalePriorCacheError,
    coarse_prior_from_mask,
    compute_coarse_prior,
    evidence_from_keypoints,
    evidence_from_parsing,
    union_person_mask,
)
from mpn_plugin.priors.adapters import KeypointsAdapter, ParsingFolderAdapter, SyntheticMapsAdapter


def parsing_map(head=True, legs=True, pants_only=False):
    """A 16x8 LIP map: hair/face rows 1-3, upper clothes 4-8, pants 9-12, legs/shoes 13-15."""
    m = np.zeros((16, 8), np.uint8)
    if head:
        m[1, 3:5] = 2
        m[2:4, 3:5] = 13
    m[4:9, 2:6] = 5
    m[9:13, 2:6] = 9
    if legs and not pants_only:
        m[13:15, 2] = 16
        m[15, 2] = 18
    if pants_only:
        m[13:16, 2:6] = 9
    return m


def test_evidence_from_parsing_head_and_legs():
    assert evidence_from_parsing(parsing_map()) == (True, True)
    assert evidence_from_parsing(parsing_map(head=False)) == (False, True)
    # pants end at row 12 and the person spans rows 1-12: pants in its lowest quarter count
    assert evidence_from_parsing(parsing_map(legs=False)) == (True, True)
    assert evidence_from_parsing(parsing_map(legs=False),
                                 PriorConfig(pants_count_as_legs=False)) == (True, False)
    assert evidence_from_parsing(None) == (False, False)


def test_union_and_fallback_cases():
    a = np.zeros((4, 4), bool)
    a[0, 0] = True
    b = np.zeros((4, 4), np.uint8)
    b[3, 3] = 255
    mask, case = union_person_mask(True, True, [a, b, None])
    assert case == "prior" and mask.sum() == 2 and mask[0, 0] and mask[3, 3]
    assert union_person_mask(False, True, [a]) == (None, "fallback")    # head missing
    assert union_person_mask(True, False, [a]) == (None, "fallback")    # legs missing
    assert union_person_mask(True, True, [np.zeros((4, 4))]) == (None, "fallback")  # empty
    assert union_person_mask(True, True, [None, None]) == (None, "fallback")


def test_stage2_resize_binarise_dilate_boundaries_literal():
    # 8x8 image mask, feature size 4x4: each cell = a 2x2 block; coverage >= 0.5 -> 1
    m = np.zeros((8, 8), np.float32)
    m[2:4, 2:4] = 1          # cell (1, 1) fully covered
    m[4:6, 4] = 1            # cell (2, 2) half covered -> 1 at threshold 0.5
    m[6, 0] = 1              # cell (3, 0) a quarter covered -> 0
    p = coarse_prior_from_mask(m, (4, 4))
    # dilation 1x2: a set cell also sets its right neighbour (cell (r, c) set if (r, c - 1) set)
    assert p.mask.tolist() == [[0, 0, 0, 0],
                               [0, 1, 1, 0],
                               [0, 0, 1, 1],
                               [0, 0, 0, 0]]
    assert (p.top, p.bottom, p.case) == (0.25, 0.75, "prior")


def test_stage2_one_row_roi_and_empty_and_none():
    m = np.zeros((8, 4), np.float32)
    m[4:6, 0:2] = 1  # one feature row (row 2 of 4)
    p = coarse_prior_from_mask(m, (4, 2))
    assert p.mask.tolist() == [[0, 0], [0, 0], [1, 1], [0, 0]]
    assert (p.top, p.bottom) == (0.5, 0.75)
    for empty in (np.zeros((8, 4)), None):
        f = coarse_prior_from_mask(empty, (4, 2))
        assert f.case == "fallback" and (f.top, f.bottom) == (0.0, 1.0) and f.mask.min() == 1


def test_compute_coarse_prior_end_to_end():
    seg = np.zeros((16, 8), np.uint8)
    seg[2:14, 2:6] = 255
    p = compute_coarse_prior(True, True, [seg], (8, 4))
    assert (p.top, p.bottom) == (1 / 8, 7 / 8)
    assert p.mask[1:7, 1:4].min() == 1 and p.mask[:, 0].max() == 0
    with pytest.raises(ValueError, match="invalid ROI"):
        CoarsePrior(np.ones((2, 2)), 0.5, 0.5, "prior")


def test_keypoint_evidence():
    kp = np.zeros((17, 3), np.float32)
    kp[0] = (10, 5, 0.9)                     # nose
    kp[13], kp[15] = (8, 40, 0.8), (8, 60, 0.8)  # left knee + ankle
    assert evidence_from_keypoints(kp, 0.3, (64, 32)) == (True, True)
    kp[15, 1] = 70                           # ankle outside the image
    assert evidence_from_keypoints(kp, 0.3, (64, 32)) == (True, False)


def write(path, arr):
    import os
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, arr)


def test_parsing_folder_and_keypoint_adapters(tmp_path):
    img = tmp_path / "imgs" / "a" / "x.jpg"
    write(str(img), np.zeros((16, 8, 3), np.uint8))
    write(str(tmp_path / "parsing" / "a" / "x.png"), parsing_map())
    fg = np.zeros((16, 8), np.uint8)
    fg[0:16, 1] = 255
    write(str(tmp_path / "masks" / "a" / "x.png"), fg)
    mask, case, _ = ParsingFolderAdapter(str(tmp_path / "parsing"),
                                         str(tmp_path / "masks"))(str(img), "a/x.jpg")
    assert case == "prior"
    assert mask.sum() == (parsing_map() > 0).sum() + 16 - ((parsing_map() > 0)[:, 1]).sum()
    kp = np.zeros((17, 3))
    kp[0] = (4, 2, 1)
    kp[14] = (5, 10, 1)
    kp[16] = (5, 14, 1)
    (tmp_path / "kp.json").write_text(json.dumps({"a/x.jpg": kp.tolist()}))
    mask, case, _ = KeypointsAdapter(str(tmp_path / "kp.json"))(str(img), "a/x.jpg")
    assert case == "prior" and mask[:1].sum() == 0 and mask[2:15].all()
    assert KeypointsAdapter(str(tmp_path / "kp.json"))(str(img), "other.jpg")[1] == "fallback"


def test_synthetic_adapter_on_generated_maps(tiny_root):
    import csv
    d = osp.join(tiny_root, "synthetic_pedestrians")
    adapter = SyntheticMapsAdapter(d)
    with open(osp.join(d, "annotations.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "bounding_box_train"]
    for r in rows[:60]:
        rel = osp.join(r["split"], r["file"])
        mask, case, info = adapter(osp.join(d, rel), rel)
        if r["parsing_status"] == "missing":
            assert case == "fallback"
        if case == "prior":
            person = cv2.imread(osp.join(d, "maps", r["split"], r["file"][:-4] + "_person.png"),
                                0) > 0
            if r["parsing_status"] == "ok" and r["segmentation_status"] == "ok":
                iou = (mask & person).sum() / (mask | person).sum()
                assert iou > 0.8, (rel, iou)


def make_records(n, fallback_every=3):
    recs = []
    for i in range(n):
        m = np.zeros((16, 8), bool)
        m[2 + i % 4:14, 2:6] = True
        mask = None if i % fallback_every == 0 else m
        recs.append((f"train/{i:03d}.jpg", mask, coarse_prior_from_mask(mask, (8, 4))))
    return recs


HEADER = {"tool": "synthetic", "tool_version": "1", "feature_size": [8, 4], "fingerprint": "abc"}


def test_cache_round_trip(tmp_path):
    path = str(tmp_path / "priors.npz")
    w = PriorCacheWriter(path, HEADER, chunk_size=4)
    recs = make_records(10)
    for r in recs:
        w.add(*r)
    cache = w.finish()
    assert len(cache) == 10 and not osp.exists(path + ".parts")
    for rel, mask, prior in recs:
        got = cache.get(rel)
        assert got.case == prior.case and got.top == pytest.approx(prior.top)
        assert np.array_equal(got.mask, prior.mask)
        assert (got.mask_image is None) == (mask is None)
        if mask is not None:
            assert np.array_equal(got.mask_image, mask)
    assert cache.summary()["fallback_fraction"] == pytest.approx(4 / 10)
    with pytest.raises(KeyError, match="generate_priors"):
        cache.get("train/nope.jpg")


def test_stale_cache_is_rejected(tmp_path):
    path = str(tmp_path / "priors.npz")
    w = PriorCacheWriter(path, HEADER)
    for r in make_records(2):
        w.add(*r)
    w.finish()
    PriorCache.load(path, "synthetic", "1", (8, 4), "abc")
    for kwargs, what in ((dict(expected_feature_size=(24, 8)), "feature_size"),
                         (dict(expected_version="2"), "tool_version"),
                         (dict(expected_tool="mediapipe"), "tool"),
                         (dict(dataset_fingerprint="xyz"), "fingerprint")):
        with pytest.raises(StalePriorCacheError, match=what):
            PriorCache.load(path, **kwargs)
    with pytest.raises(FileNotFoundError, match="generate_priors"):
        PriorCache.load(str(tmp_path / "missing.npz"))


def test_cache_writer_resumes_after_interruption(tmp_path):
    path = str(tmp_path / "priors.npz")
    recs = make_records(9)
    w = PriorCacheWriter(path, HEADER, chunk_size=3)
    for r in recs[:7]:   # 2 chunks written, 1 record pending when "interrupted"
        w.add(*r)
    del w
    w2 = PriorCacheWriter(path, HEADER, chunk_size=3)
    assert w2.done == {r[0] for r in recs[:6]}
    for r in recs:
        if r[0] not in w2.done:
            w2.add(*r)
    assert len(w2.finish()) == 9
    with pytest.raises(StalePriorCacheError):
        PriorCacheWriter(path + "2", HEADER).add(*recs[0]) or PriorCacheWriter(
            path + "2", dict(HEADER, feature_size=[24, 8]))
