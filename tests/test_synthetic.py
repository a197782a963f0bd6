"""The synthetic pedestrian generator: layout, torchreid parsing, statistics."""
import csv
import glob
import hashlib
import itertools
import os.path as osp

import cv2
import pytest

from conftest import tiny_config
from mpn_plugin import compat
from mpn_plugin.data.synthetic import (
    DATASET_DIR,
    SyntheticConfig,
    generate_synthetic_dataset,
    make_identities,
    part_differences,
)


def rows(root):
    with open(osp.join(root, DATASET_DIR, "annotations.csv")) as f:
        return list(csv.DictReader(f))


def test_torchreid_market1501_parser_reads_it_unchanged(tiny_root):
    market = compat.submodule("data.datasets.image.market1501").Market1501
    market.dataset_dir = DATASET_DIR  # the same folder, read by torchreid's own class

    try:
        ds = market(root=tiny_root, mode="train", verbose=False)
    finally:
        market.dataset_dir = "market1501"
    assert ds.num_train_pids == 16
    assert len(ds.train) == 16 * 8
    assert ds.get_num_pids(ds.query) == ds.get_num_pids(ds.gallery) == 10
    camids = {c for _, _, c, _ in ds.train + ds.query + ds.gallery}
    assert camids <= {0, 1, 2, 3}


def test_every_query_has_a_cross_camera_gallery_match(tiny_root):
    r = rows(tiny_root)
    gallery = {(x["pid"], x["camid"]) for x in r if x["split"] == "bounding_box_test"}
    for q in (x for x in r if x["split"] == "query"):
        assert any(p == q["pid"] and c != q["camid"] for p, c in gallery), q["file"]
    test_cams = {}
    for x in r:
        if x["split"] != "bounding_box_train":
            test_cams.setdefault(x["pid"], set()).add(x["camid"])
    assert all(len(c) >= 2 for c in test_cams.values())


def test_maps_are_png_same_size_and_consistent(tiny_root):
    d = osp.join(tiny_root, DATASET_DIR)
    assert not glob.glob(osp.join(d, "maps", "**", "*.jpg"), recursive=True)
    for x in rows(tiny_root)[:40]:
        img = cv2.imread(osp.join(d, x["split"], x["file"]))
        stem = osp.join(d, "maps", x["split"], x["file"][:-4])
        person = cv2.imread(stem + "_person.png", 0)
        assert person.shape == img.shape[:2] == (128, 64)
        if x["parsing_status"] == "ok":
            parsing = cv2.imread(stem + "_parsing.png", cv2.IMREAD_UNCHANGED)
            assert parsing.max() <= 19
            # parsing foreground lies inside the ground-truth person mask (nearest vs area resize
            # may differ on a few boundary pixels)
            outside = ((parsing > 0) & (person == 0)).sum() / max((parsing > 0).sum(), 1)
            assert outside < 0.15
        else:
            assert x["parsing_status"] in ("missing", "corrupted")
            assert osp.exists(stem + "_parsing.png") == (x["parsing_status"] == "corrupted")


def test_deterministic_by_seed(tmp_path):
    cfg = tiny_config(num_train_ids=3, num_test_ids=2, images_per_id=4)
    generate_synthetic_dataset(str(tmp_path / "a"), cfg, progress=False)
    generate_synthetic_dataset(str(tmp_path / "b"), cfg, progress=False)

    def digest(root):
        h = hashlib.sha256()
        for p in sorted(glob.glob(osp.join(root, DATASET_DIR, "**", "*.*"), recursive=True)):
            if p.endswith((".jpg", ".png")):
                h.update(open(p, "rb").read())
        return h.hexdigest()
    assert digest(str(tmp_path / "a")) == digest(str(tmp_path / "b"))
    # same config: reused; another config in the same place: refused
    assert generate_synthetic_dataset(str(tmp_path / "a"), cfg, progress=False)["reused"]
    with pytest.raises(FileExistsError, match="another config"):
        generate_synthetic_dataset(str(tmp_path / "a"), tiny_config(seed=9, num_train_ids=3,
                                   num_test_ids=2, images_per_id=4), progress=False)


def test_statistics_match_the_config(tmp_path):
    cfg = tiny_config(num_train_ids=40, num_test_ids=20, images_per_id=10, map_failure_rate=0.2,
                      hard_negative_share=0.25, workers=2)
    s = generate_synthetic_dataset(str(tmp_path), cfg, progress=False)
    n = s["images"]
    assert n == 600
    # detection errors cut heads and feet off in a minority of images (Fig. 1)
    assert 0.05 < s["head_cut_share"] < 0.3 and 0.05 < s["feet_cut_share"] < 0.35
    # map failures per tool ~ the configured rate (binomial sd ~ 0.016 at n = 600)
    for k in ("parsing_failure_share", "segmentation_failure_share"):
        assert abs(s[k] - 0.2) < 0.06, (k, s[k])
    # hard negatives: identity pairs that differ in exactly one part group
    ids = make_identities(cfg)
    one_part = sum(part_differences(a, b) == 1 for a, b in itertools.combinations(ids, 2))
    assert one_part >= round(0.25 * 40) + round(0.25 * 20)
    assert one_part <= 2 * (round(0.25 * 40) + round(0.25 * 20))


def test_error_free_boxes_cut_nothing(tmp_path):
    s = generate_synthetic_dataset(str(tmp_path), tiny_config(error_free_boxes=True,
                                   num_train_ids=10, num_test_ids=5), progress=False)
    assert s["head_cut_share"] == 0 and s["feet_cut_share"] == 0


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="num_cameras"):
        SyntheticConfig(num_cameras=8)
    with pytest.raises(ValueError, match="1501"):
        SyntheticConfig(num_train_ids=1000, num_test_ids=600)
