"""The tools a user runs that had no test (issue 30), each called once end to end on tiny data,
checking what its output says, not only that a file appeared: make_synthetic_dataset.py,
visualize_priors.py, check_bn_statistics.py, benchmark_evaluation.py and run_demo.sh."""
import os
import os.path as osp
import re
import shutil
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import needs_mobilenetv2_weights

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NAME = "synthetic_pedestrians"
SMALL = ["--num-train-ids", "4", "--num-test-ids", "3", "--images-per-id", "4", "--workers", "1"]


# ------------------------------------------------------------------ make_synthetic_dataset.py
def market_names(folder):
    """(pid, camera) of every image name in a Market-1501 style folder (0001_c2s1_000004_00)."""
    out = []
    for name in sorted(os.listdir(folder)):
        m = re.fullmatch(r"(\d{4})_c(\d)s1_\d{6}_\d{2}\.jpg", name)
        assert m, name
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def tree_bytes(folder):
    return {osp.relpath(osp.join(d, f), folder): open(osp.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files if f != "generator.json"}


def test_make_synthetic_dataset_writes_a_market_layout_torchreid_reads(tmp_path, capsys):
    import mpn_plugin.data  # noqa: F401  (registers synthetic_pedestrians)
    from mpn_plugin import compat
    from mpn_plugin.cli import make_synthetic_dataset
    summary = make_synthetic_dataset.main(["--root", str(tmp_path / "a"), *SMALL])
    printed = capsys.readouterr().out
    assert re.search(r"config hash \w+\) in " + re.escape(str(tmp_path / "a")), printed)
    d = tmp_path / "a" / NAME
    train = market_names(d / "bounding_box_train")
    query, gallery = market_names(d / "query"), market_names(d / "bounding_box_test")
    assert len(train) == 4 * 4 and len({p for p, _ in train}) == 4     # 4 ids x 4 images
    assert {p for p, _ in query} == {p for p, _ in gallery}            # 3 test identities
    assert len({p for p, _ in query}) == 3 and not {p for p, _ in train} & {p for p, _ in query}
    assert summary["split_sizes"] == {"bounding_box_train": 16, "query": len(query),
                                      "bounding_box_test": len(gallery)}
    assert len(query) + len(gallery) == 3 * 4
    img = cv2.imread(str(d / "bounding_box_train" / os.listdir(d / "bounding_box_train")[0]))
    assert img.shape == (128, 64, 3) and img.std() > 10              # a picture, not a blank
    ds = compat.data.datasets.init_image_dataset(NAME, root=str(tmp_path / "a"), mode="train",
                                                  verbose=False)
    assert ds.num_train_pids == 4 and len(ds.train) == 16
    # the same command again reuses the set; the same seed elsewhere gives the same bytes
    assert make_synthetic_dataset.main(["--root", str(tmp_path / "a"), *SMALL])["reused"]
    make_synthetic_dataset.main(["--root", str(tmp_path / "b"), *SMALL])
    assert tree_bytes(d) == tree_bytes(tmp_path / "b" / NAME)
    # another set over an existing one is refused, naming the flag
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_synthetic_dataset.main(["--root", str(tmp_path / "a"), *SMALL, "--seed", "5"])
    make_synthetic_dataset.main(["--root", str(tmp_path / "a"), *SMALL, "--seed", "5",
                                 "--overwrite"])
    assert tree_bytes(d) != tree_bytes(tmp_path / "b" / NAME)


# ------------------------------------------------------------------ visualize_priors.py
def test_visualize_priors_draws_each_images_mask_roi_and_case(tmp_path, capsys):
    from mpn_plugin.cli import generate_priors, make_synthetic_dataset
    from mpn_plugin.priors import PriorCache
    from mpn_plugin.priors import visualize as visualize_priors
    make_synthetic_dataset.main(["--root", str(tmp_path), *SMALL, "--map-failure-rate", "0.5"])
    generate_priors.main(["--dataset", NAME, "--root", str(tmp_path), "--adapter", "synthetic",
                          "--height", "128", "--width", "64", "--workers", "1",
                          "--max-fallback-share", "1"])
    cache_path = str(tmp_path / NAME / "priors_synthetic_8x4.npz")
    cache = PriorCache.load(cache_path)
    rels = cache.relpaths()
    assert len(rels) == 16
    out = str(tmp_path / "priors.png")
    visualize_priors.main(["--cache", cache_path, "--num", "16", "--cols", "4", "--out", out])
    assert f"wrote {out}" in capsys.readouterr().out
    sheet = cv2.imread(out)                                      # BGR
    th, tw = 2 * 128 + 4, 3 * 2 * 64 + 4                         # three panels at scale 2
    assert sheet.shape == (4 * th, 4 * tw, 3)
    cases = set()
    for i, rel in enumerate(rels):                               # all 16: in cache order
        rec = cache.get(rel)
        cases.add(rec.case)
        tile = sheet[(i // 4) * th:(i // 4) * th + 256, (i % 4) * tw:(i % 4) * tw + 384]
        image = cv2.imread(str(tmp_path / NAME / rel))
        big = cv2.resize(image, (128, 256), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(tile[:, :128], big), rel           # panel 1: the image
        # panel 2: the upper ROI line in green across the panel
        top = int(rec.top * 256)
        assert (np.all(tile[top, 128:256] == (0, 255, 0), axis=1)).mean() > 0.8, rel
        # panel 3: a red frame for a fallback prior, a green one for a prior
        frame = (0, 0, 255) if rec.case == "fallback" else (0, 200, 0)
        assert tuple(int(v) for v in tile[0, 300]) == frame, (rel, rec.case)
        # the person mask: its pixels are blended halfway to red, the others are the image
        # (but for the dots of M and the ROI lines drawn over them)
        mask = (np.ones((256, 128), bool) if rec.mask_image is None else
                cv2.resize(rec.mask_image.astype(np.uint8), (128, 256),
                           interpolation=cv2.INTER_NEAREST) > 0)
        panel = tile[:, 128:256].astype(int)
        halfway = np.abs(panel - (big.astype(int) + (0, 0, 255)) / 2).max(-1) <= 1
        assert halfway[mask].mean() > 0.9, rel
        if not mask.all():
            assert (panel == big).all(-1)[~mask].mean() > 0.9, rel
    assert cases == {"prior", "fallback"}                        # both cases were drawn


# ------------------------------------------------------------------ check_bn_statistics.py
def test_check_bn_statistics_reports_the_gap_that_precise_bn_closes(tiny_root, tmp_path):
    """An untrained MPN (running statistics 0 and 1): its eval-mode features rank unlike
    those with the MT inputs' own batch statistics, and re-estimating the statistics from MT
    inputs of training batches (the remedy) brings them close (measured 0.50 -> 0.94)."""
    from mpn_plugin.benchmarks import bn_statistics_gap as check_bn_statistics
    from mpn_plugin.build import build_model
    from mpn_plugin.train import build_parser, setup_cfg
    fast = ["data.height", "64", "data.width", "32", "mpn.backbone", "resnet18", "mpn.dim", "32",
            "test.batch_size", "64", "data.workers", "0", "train.batch_size", "16",
            "sampler.num_instances", "4"]
    cfg = setup_cfg(build_parser().parse_args(["--config-file", "configs/mpn_synthetic.yaml",
                                               *fast]))
    torch.manual_seed(0)
    ckpt = str(tmp_path / "model.pth.tar-1")
    torch.save({"state_dict": build_model(cfg, num_classes=16).state_dict(),
                "epoch": 1}, ckpt)
    out = tmp_path / "bn.md"
    rows = check_bn_statistics.main(["--model", f"MPN=configs/mpn_synthetic.yaml:{ckpt}",
                                     "--root", tiny_root, "--precise-bn-batches", "4",
                                     "--out", str(out), *fast])
    r = rows[0]
    assert r["rho"] < 0.8 and r["rho_precise"] > r["rho"] + 0.2, r
    # every test-time head BN is listed, and its running mean is off the MT inputs' mean
    names = [name for name, _ in check_bn_statistics.head_bns(
        build_model(cfg, num_classes=16))]
    assert [name for name, _, _ in r["layers"]] == names and names
    assert all(shift > 0.1 for _, shift, _ in r["layers"]), r["layers"]
    text = out.read_text()
    assert f"| MPN | {r['rho']:.3f} | {100 * r['rank1']:.1f} / {100 * r['mAP']:.1f} |" in text
    assert f" {r['rho_precise']:.3f} |" in text and "from 4 train batches" in text


# ------------------------------------------------------------------ benchmark_evaluation.py
def test_benchmark_evaluation_quick_report(tmp_path):
    out = tmp_path / "eval.md"
    r = subprocess.run([sys.executable, osp.join(ROOT, "tools", "benchmark_evaluation.py"),
                        "--quick", "--out", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()
            if line.startswith("| 400 x 2,000 |") or line.startswith("| 1,000 x 8,000 |")]
    assert len(rows) == 4, out.read_text()
    market = [[c.strip() for c in row] for row in rows[:3]]
    # the three methods on the same problem: one Rank-1 and one mAP, ours identical to torchreid
    assert len({(row[4], row[5]) for row in market}) == 1, market
    assert [row[6] for row in market] == ["reference", "yes", "yes"]
    assert 0 < float(market[0][4]) <= 1 and 0 < float(market[0][5]) <= 1
    # ours is faster than torchreid's Python fallback on the same problem
    times = [float(row[2]) for row in market]
    assert times[1] < times[0] and times[2] < times[0], market
    assert "Speed-up on the 400 x 2,000 problem" in out.read_text()
    assert out.read_text().strip() in r.stdout


# ------------------------------------------------------------------ run_demo.sh
PYTHON_SHIM = """#!/bin/sh
# the real interpreter; the demo's dataset at the tiny size of the tests
case "$1" in
  *make_synthetic_dataset.py) exec {python} "$@" {small} ;;
esac
exec {python} "$@"
"""


def test_run_demo_script_end_to_end_on_tiny_data(tmp_path):
    """tools/run_demo.sh as a user runs it, on a copy of the repository whose setup step is
    done (a no-op) and whose interpreter makes the dataset tiny; the demo's own steps all run:
    dataset, priors, training, Rank-1/mAP."""
    needs_mobilenetv2_weights()            # the demo's config starts from ImageNet MobileNetV2
    repo = tmp_path / "repo"
    os.makedirs(repo / "tools")
    for entry in ("configs", "mpn_plugin"):
        os.symlink(osp.join(ROOT, entry), repo / entry)
    for name in os.listdir(osp.join(ROOT, "tools")):
        if name.endswith(".py"):
            os.symlink(osp.join(ROOT, "tools", name), repo / "tools" / name)
    shutil.copy(osp.join(ROOT, "tools", "run_demo.sh"), repo / "tools" / "run_demo.sh")
    (repo / "tools" / "setup_env.sh").write_text("echo '[setup] skipped in this test'\n")
    os.makedirs(repo / ".venv" / "bin")
    shim = repo / ".venv" / "bin" / "python"
    shim.write_text(PYTHON_SHIM.format(python=sys.executable, small=" ".join(SMALL)))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    data = tmp_path / "data"
    env = dict(os.environ, ROOT=str(data), PYTHONPATH=ROOT)
    opts = ["train.max_epoch", "1", "train.batch_size", "8", "sampler.num_instances", "4",
            "data.workers", "0", "data.save_dir", str(tmp_path / "log")]
    r = subprocess.run(["bash", str(repo / "tools" / "run_demo.sh"), *opts], cwd=str(tmp_path),
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(os.listdir(data / NAME / "bounding_box_train")) == 16
    from mpn_plugin.priors import PriorCache
    cache = PriorCache.load(str(data / NAME / "priors_synthetic_8x4.npz"))
    assert sorted(cache.relpaths()) == sorted(
        osp.join("bounding_box_train", n) for n in os.listdir(data / NAME / "bounding_box_train"))
    import json
    results = json.load(open(tmp_path / "log" / "results.json"))
    res = results["results"][NAME]
    assert res["epoch"] == 1 and res["num_query_ids"] == 3
    from mpn_plugin.environment import device_name
    assert results["device"] == device_name(torch.cuda.is_available())   # where it was measured
    printed = re.search(rf"\[{NAME}\] Rank-1 ([\d.]+)%  mAP ([\d.]+)%", r.stdout)
    assert printed, r.stdout[-2000:]
    assert float(printed.group(1)) == pytest.approx(100 * res["rank1"], abs=0.06)
    assert float(printed.group(2)) == pytest.approx(100 * res["mAP"], abs=0.06)
    assert re.search(r"\[demo\] total wall time: \d+ s", r.stdout)
    # a failing step stops the script (set -e): no result line, no wall time, exit != 0
    bad = subprocess.run(["bash", str(repo / "tools" / "run_demo.sh"), "mpn.bogus", "1"],
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert bad.returncode != 0 and "[demo] total wall time" not in bad.stdout
    assert "mpn.bogus" in bad.stdout + bad.stderr
