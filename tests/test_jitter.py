"""Detector-like box jitter of prepared crops (issue 29, tools/prepare_dataset.py --box-jitter):
the error model by hand, determinism by seed and name, and the prepared dataset it writes."""
import csv
import json
import os.path as osp

import cv2
import numpy as np
import pytest

from mpn_plugin.cli import prepare_dataset
from mpn_plugin.data.box_jitter import BoxJitter, apply_box_error
from mpn_plugin.data.manifest import read_manifest
from mpn_plugin.data.synthetic import SyntheticConfig
from test_prepare_dataset import write_crops


def _dot_image(H=64, W=32, y=32, x=16):
    img = np.zeros((H, W), np.uint8)
    img[y, x] = 255
    return img


def test_identity_box_returns_the_image():
    img = np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_box_error(img, (1.0, 0.0, 0.0)), img)


def test_shift_moves_the_person_by_dy_h_and_dx_w():
    out = apply_box_error(_dot_image(), (1.0, 0.125, -0.25))    # +8 rows, -8 columns
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert (y, x) == (40, 8) and out.shape == (64, 32)


def test_scale_zooms_about_the_centre_and_replicates_the_border():
    # a dot 8 rows above the centre moves to 16 rows above it at scale 2 (head cut off sooner)
    out = apply_box_error(_dot_image(y=24), (2.0, 0.0, 0.0))
    y, _ = np.unravel_index(out.argmax(), out.shape)
    assert abs(y - 16) <= 1
    # at scale 0.5 the box is twice the crop: the outside replicates the border column/row
    img = np.zeros((64, 32), np.uint8)
    img[:, 0] = 200                                             # a bright left edge
    small = apply_box_error(img, (0.5, 0.0, 0.0))
    assert small[:, :8].min() >= 199 and small[:, 24:].max() == 0


def test_parameters_follow_the_generator_and_are_deterministic_by_seed_and_name():
    gen = SyntheticConfig()
    j = BoxJitter(seed=3)
    assert j.box_scale == tuple(gen.box_scale) and j.box_shift_std == tuple(gen.box_shift_std)
    assert j.box_for("a.png") == BoxJitter(seed=3).box_for("a.png")
    assert j.box_for("a.png") != BoxJitter(seed=4).box_for("a.png")
    assert j.box_for("a.png") != j.box_for("b.png")
    boxes = np.array([j.box_for(f"{i}.png") for i in range(2000)])
    assert boxes[:, 0].min() >= gen.box_scale[0] and boxes[:, 0].max() <= gen.box_scale[1]
    assert boxes[:, 1].std() == pytest.approx(gen.box_shift_std[0], rel=0.1)
    assert boxes[:, 2].std() == pytest.approx(gen.box_shift_std[1], rel=0.1)
    with pytest.raises(ValueError, match="box_scale"):
        BoxJitter(box_scale=(1.2, 0.8))


def test_prepare_dataset_box_jitter_writes_jittered_copies_for_every_split(tmp_path):
    write_crops(tmp_path / "crops", ids=6, cams=2)
    args = ["--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids",
            2, "--query-cams", 0, "--gallery-cams", 1, "--quiet"]
    plain = prepare_dataset.main([*map(str, args), "--out", str(tmp_path / "plain")])
    summary = prepare_dataset.main([*map(str, args), "--out", str(tmp_path / "jit"),
                                    "--box-jitter", "--jitter-seed", "7"])
    assert summary["counts"] == plain["counts"]                  # same split, same identities
    rows, plain_rows = read_manifest(str(tmp_path / "jit" / "manifest.csv")), \
        read_manifest(str(tmp_path / "plain" / "manifest.csv"))
    assert {r.split for r in rows} == {"train", "query", "gallery"}
    with open(tmp_path / "jit" / "box_jitter.csv") as f:
        params = {r["image"]: r for r in csv.DictReader(f)}
    for row, orig in zip(rows, plain_rows):
        assert row.path.startswith(str(tmp_path / "jit" / "jittered")) and osp.isfile(row.path)
        assert (row.pid, row.camid, row.split) == (orig.pid, orig.camid, orig.split)
        name = osp.relpath(orig.path, str(tmp_path / "crops"))
        box = BoxJitter(seed=7).box_for(name)
        assert float(params[name]["scale"]) == pytest.approx(box[0], abs=1e-5)
        expected = apply_box_error(cv2.imread(orig.path, cv2.IMREAD_UNCHANGED), box)
        got = cv2.imread(row.path, cv2.IMREAD_UNCHANGED)
        assert got.shape == expected.shape
        # jpeg re-encoding: close to the jittered image, far from the original crop
        assert np.abs(got.astype(int) - expected).mean() < np.abs(
            got.astype(int) - cv2.imread(orig.path, cv2.IMREAD_UNCHANGED)).mean()
    saved = json.loads((tmp_path / "jit" / "summary.json").read_text())
    assert saved["box_jitter"]["seed"] == 7 and saved["box_jitter"]["images"] == len(rows)
