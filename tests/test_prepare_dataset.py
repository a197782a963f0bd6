"""tools/prepare_dataset.py and the manifest dataset: three input kinds, validation, split
determinism, torchreid loading, MPN training on it, and the real CUHK01 conversion."""
import csv
import json
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from mpn_plugin import compat
from mpn_plugin.cli import prepare_dataset
from mpn_plugin.data.manifest import read_manifest


def write_crops(folder, ids=8, cams=3, per_cam=2, seed=0, name="{pid:04d}_c{cam}_{k:03d}.jpg"):
    """Small random crops; every identity seen by every camera. Returns the paths."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for pid in range(1, ids + 1):
        for cam in range(cams):
            for k in range(per_cam):
                arr = rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)
                p = osp.join(folder, name.format(pid=pid, cam=cam, k=k))
                Image.fromarray(arr).save(p)
                paths.append(p)
    return paths


def run(*args):
    return prepare_dataset.main([*map(str, args), "--quiet"])


def test_pattern_input_split_and_determinism(tmp_path):
    write_crops(tmp_path / "crops")
    a = run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 3,
            "--out", tmp_path / "a", "--seed", 5)
    run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 3,
        "--out", tmp_path / "b", "--seed", 5)
    c = run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 3,
            "--out", tmp_path / "c", "--seed", 6)
    assert a["counts"]["train"] == {"images": 30, "identities": 5, "cameras": 3}
    ra, rb, rc = (read_manifest(str(tmp_path / d / "manifest.csv")) for d in "abc")
    assert ra == rb                                        # same seed, same split
    test_ids = lambda rows: {r.pid for r in rows if r.split != "train"}  # noqa: E731
    assert len(test_ids(ra)) == len(test_ids(rc)) == 3      # always 3 test ids
    seeds = {frozenset(test_ids(read_manifest(str(tmp_path / d / "manifest.csv")))) for d in "ac"}
    assert a != c and len(seeds) == 2                      # seeds 5 and 6 draw other ids
    # default query/gallery: per test id one query camera, the others in the gallery
    for pid in test_ids(ra):
        q = {r.camid for r in ra if r.pid == pid and r.split == "query"}
        g = {r.camid for r in ra if r.pid == pid and r.split == "gallery"}
        assert len(q) == 1 and g == {0, 1, 2} - q
    assert not set(test_ids(ra)) & {r.pid for r in ra if r.split == "train"}


def test_regex_and_preset_inputs(tmp_path):
    # CUHK01 naming: PPPPIII.png, III 001-002 camera A, 003-004 camera B
    folder = tmp_path / "cuhk01"
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    for pid in range(1, 7):
        for idx in range(1, 5):
            Image.fromarray(rng.integers(0, 255, (64, 24, 3), dtype=np.uint8)).save(
                folder / f"{pid:04d}{idx:03d}.png")
    s = run("--images", folder, "--preset", "cuhk01", "--num-test-ids", 2, "--query-cams", 0,
            "--gallery-cams", 1, "--out", tmp_path / "p")
    assert s["counts"]["query"] == {"images": 4, "identities": 2, "cameras": 1}
    assert s["counts"]["gallery"] == {"images": 4, "identities": 2, "cameras": 1}
    rows = read_manifest(str(tmp_path / "p" / "manifest.csv"))
    assert {r.camid for r in rows if r.split == "query"} == {0}
    assert all(r.camid == (0 if int(osp.basename(r.path)[4:7]) <= 2 else 1) for r in rows)
    s = run("--images", folder, "--regex", r"^(?P<pid>\d{4})(?P<cam>\d{3})\.png$",
            "--num-test-ids", 2, "--out", tmp_path / "r")
    assert s["counts"]["train"]["cameras"] == 4            # every III is its own camera here


def test_csv_input_any_format_many_cameras(tmp_path):
    rng = np.random.default_rng(2)
    os.makedirs(tmp_path / "imgs")
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid"])
        for pid in (10, 2000, 35000):                      # pids beyond Market's 1501
            for cam in (3, 7, 12):                         # more than Market's 6 cameras
                p = f"imgs/{pid}_{cam}.bmp"
                Image.fromarray(rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)).save(
                    tmp_path / p)
                w.writerow([p, pid, cam])
    s = run("--csv", tmp_path / "labels.csv", "--num-test-ids", 1, "--out", tmp_path / "o")
    assert s["counts"]["train"] == {"images": 6, "identities": 2, "cameras": 3}
    assert s["skipped"]["count"] == 0


def test_bad_input_is_reported_not_lost(tmp_path):
    paths = write_crops(tmp_path / "crops", ids=6, cams=2, per_cam=2)
    with open(paths[0], "wb") as f:
        f.write(b"not an image")                           # corrupt
    import shutil
    shutil.copyfile(paths[5], tmp_path / "crops" / "0006_c1_999.jpg")  # same content as another
    # tiny
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(tmp_path / "crops" / "0005_c0_500.jpg")
    (tmp_path / "crops" / "notes.txt").write_text("hello")
    # identity 7 seen by camera 0 only: cannot be a test identity
    Image.fromarray(np.full((64, 32, 3), 7, np.uint8)).save(tmp_path / "crops" / "0007_c0_000.jpg")
    s = run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 2,
            "--out", tmp_path / "o")
    reasons = {it["item"]: it["reason"] for it in s["skipped"]["items"]}
    assert reasons[osp.basename(paths[0])].startswith("unreadable image")
    assert reasons["0006_c1_999.jpg"].startswith("same content as")
    assert reasons["0005_c0_500.jpg"].startswith("too small")
    assert reasons["notes.txt"] == "not an image"
    assert s["train_only_identities"]["pids"] == [7]
    rows = read_manifest(str(tmp_path / "o" / "manifest.csv"))
    assert 7 in {r.pid for r in rows if r.split == "train"}            # kept for training
    saved = json.load(open(tmp_path / "o" / "summary.json"))
    assert saved["skipped"]["count"] == 4


def test_bad_pattern_csv_and_manifest_messages(tmp_path):
    write_crops(tmp_path / "crops", ids=3, cams=2, per_cam=1)
    with pytest.raises(ValueError, match=r"\{pid\} and \{cam\}"):
        run("--images", tmp_path / "crops", "--pattern", "{pid}_*.jpg", "--out", tmp_path / "o")
    (tmp_path / "bad.csv").write_text("file,person\nx.jpg,1\n")
    with pytest.raises(ValueError, match="path,pid,camid"):
        run("--csv", tmp_path / "bad.csv", "--out", tmp_path / "o")
    with pytest.raises(ValueError, match="only 3 of 3"):
        run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 5,
            "--out", tmp_path / "o")
    (tmp_path / "m.csv").write_text("path,pid,camid,split\na.jpg,x,0,train\n")
    with pytest.raises(ValueError, match="line 2"):
        read_manifest(str(tmp_path / "m.csv"))
    with pytest.raises(FileNotFoundError, match="prepare_dataset"):
        compat.data.datasets.init_image_dataset("custom_crops", root=str(tmp_path / "nowhere"))


def test_manifest_dataset_loads_and_mpn_trains_on_it(tmp_path):
    """torchreid's ImageDataManager reads the manifest; MPN trains with priors made for it."""
    from mpn_plugin.cli import generate_priors
    from mpn_plugin.train import main
    write_crops(tmp_path / "crops", ids=8, cams=2, per_cam=4)
    run("--images", tmp_path / "crops", "--pattern", "{pid}_c{cam}_*.jpg", "--num-test-ids", 3,
        "--out", tmp_path / "ds")
    dm = compat.data.ImageDataManager(root=str(tmp_path / "ds"), sources="custom_crops",
                                      height=64, width=32, batch_size_train=8, workers=0)
    assert dm.num_train_pids == 5 and len(dm.train_loader.dataset) == 40
    # priors from the manifest (image paths relative to the manifest's folder), uniform
    # "parsing" masks from a folder of person masks named like the images
    masks = tmp_path / "masks"
    os.makedirs(masks)
    for p in os.listdir(tmp_path / "crops"):
        m = np.zeros((64, 32), np.uint8)
        m[4:60, 6:26] = 255
        Image.fromarray(m).save(masks / p.replace(".jpg", ".png"))
    summary = generate_priors.main(["--manifest", str(tmp_path / "ds" / "manifest.csv"),
                                    "--adapter", "parsing", "--parsing-dir", str(masks),
                                    "--mask-dir", str(masks), "--height", "64", "--width", "32",
                                    "--workers", "1", "--max-fallback-share", "1"])  # all fallbacks
    assert summary["images"] == 40
    out = main(["--config-file", "configs/mpn_synthetic.yaml", "--root", str(tmp_path / "ds"),
                "data.sources", "['custom_crops_prior']", "data.targets", "['custom_crops_prior']",
                "data.height", "64", "data.width", "32", "data.workers", "0",
                "train.batch_size", "8",
                "sampler.num_instances", "4", "mpn.backbone", "resnet18", "mpn.dim", "32",
                "train.max_epoch", "1", "data.save_dir", str(tmp_path / "log")])
    res = out["results"]["custom_crops_prior"]
    # evaluated on the manifest's test split (3 identities), after one epoch of MPN's tasks
    assert res["num_query_ids"] == 3 and res["epoch"] == 1, res
    assert {"loss_id_mt", "loss_id_at"} <= set(out["loss_history"][-1]), out["loss_history"]
    assert 0 <= res["mAP"] <= 1 and res["chance_rank1"] == pytest.approx(1 / 3, abs=0.2)


CUHK01 = osp.join(SHARED_DATA, "cuhk01", "campus")


@pytest.mark.skipif(not osp.isdir(CUHK01), reason="../shared/data/cuhk01 not present")
def test_cuhk01_conversion(tmp_path):
    s = run("--images", CUHK01, "--preset", "cuhk01", "--num-test-ids", 100, "--query-cams", 0,
            "--gallery-cams", 1, "--out", tmp_path / "cuhk01")
    c = s["counts"]
    assert c["query"]["identities"] == c["gallery"]["identities"] == 100
    assert c["train"]["identities"] == 871
    total = c["train"]["images"] + c["query"]["images"] + c["gallery"]["images"]
    assert total + s["skipped"]["count"] == 3884                       # nothing lost silently
    assert set(s["skipped"]["by_reason"]) <= {"same content"}          # byte-identical copies
