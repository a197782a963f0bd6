"""tools/priors_report.py: fallback reasons, boundary / area statistics, contact sheets, CSV."""
import csv
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mpn_plugin.cli import generate_priors
from mpn_plugin.priors import report as priors_report

H, W = 128, 64


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """A parsing-adapter cache of 4 crops: 2 priors (known extents), 1 without a head, 1 without
    a parsing map."""
    root = tmp_path_factory.mktemp("report")
    crops, parsing = root / "crops", root / "parsing"
    crops.mkdir()
    parsing.mkdir()
    extents = {"a.jpg": (16, 120), "b.jpg": (32, 96), "nohead.jpg": (16, 120), "nomap.jpg": None}
    for name, ext in extents.items():
        cv2.imwrite(str(crops / name), np.full((H, W, 3), 80, np.uint8))
        if ext is None:
            continue
        lab = np.zeros((H, W), np.uint8)
        top, bottom = ext
        if name != "nohead.jpg":
            lab[top:top + 12, 24:40] = 13                         # LIP face
        lab[top + 12:bottom - 16, 20:44] = 5                       # upper clothes
        lab[bottom - 16:bottom, 22:30] = 16                        # left leg
        cv2.imwrite(str(parsing / name.replace(".jpg", ".png")), lab)
    summary = generate_priors.main(["--images", str(crops), "--adapter", "parsing", "--parsing-dir",
                                    str(parsing), "--height", "128", "--width", "64",
                                    "--workers", "1", "--max-fallback-share", "1"])
    return summary["path"], root


def test_report_numbers_csv_and_figures(small_cache, tmp_path):
    path, _ = small_cache
    out = str(tmp_path / "rep")
    numbers = priors_report.build_report(path, out, num=4)
    assert (numbers["images"], numbers["fallbacks"]) == (4, 2)
    assert numbers["fallback_fraction"] == 0.5
    assert numbers["reasons"] == {"no_tool_output": 1, "no_head": 1}
    # feature rows (16 px): a spans rows 1..6 (its narrow leg half-covers row 7), b rows 2..5
    assert numbers["top_median"] == pytest.approx((0.125 + 0.25) / 2)
    assert numbers["bottom_median"] == pytest.approx((0.875 + 0.75) / 2)
    with open(osp.join(out, "fallbacks.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [(r["relpath"], r["reason"]) for r in rows] == [("nohead.jpg", "no_head"),
                                                          ("nomap.jpg", "no_tool_output")]
    for name in ("boundaries.png", "mask_area.png", "random.png", "worst.png"):
        img = cv2.imread(osp.join(out, name))
        assert img is not None and img.shape[0] > 50, name
    text = open(osp.join(out, "report.md")).read()
    assert "**2 of 4 images (50.0%) got the fallback prior**" in text
    assert "| `no_head` | 1 | 25.0% |" in text and "--adapter parsing" in text
    assert "![worst](worst.png)" in text


def test_worst_cases_put_tool_failures_first_then_smallest_masks(small_cache):
    path, _ = small_cache
    cache = priors_report.cache_mod.PriorCache.load(path)
    stats = priors_report.prior_statistics(cache)
    assert priors_report.worst_cases(stats, 4) == ["nomap.jpg", "nohead.jpg", "b.jpg", "a.jpg"]
    assert priors_report.worst_cases(stats, 2) == ["nomap.jpg", "b.jpg"]
    area = dict(zip(stats["relpaths"], stats["area"]))
    assert area["b.jpg"] < area["a.jpg"]


def test_numbers_only_report_and_unrecorded_reasons(small_cache, tmp_path):
    path, _ = small_cache
    # a cache from before reasons were recorded
    z = dict(np.load(path))
    import json
    header = json.loads(str(z["header"]))
    header.pop("fallback_reasons")
    z["header"] = np.array(json.dumps(header))
    old = str(tmp_path / "old.npz")
    np.savez_compressed(old, **z)
    out = str(tmp_path / "numbers")
    numbers = priors_report.main(["--cache", old, "--out", out, "--no-contact-sheets"])
    assert numbers["reasons"] == {"unknown": 2}
    assert sorted(os.listdir(out)) == ["boundaries.png", "fallbacks.csv", "mask_area.png",
                                       "report.md"]


def test_every_fallback_reason_is_classified_and_explained():
    from mpn_plugin.priors.pipeline import FALLBACK_REASONS, fallback_reason
    assert set(priors_report.REASON_ORDER) == set(FALLBACK_REASONS) | {priors_report.UNKNOWN}
    assert set(priors_report.REASON_TEXT) == set(priors_report.REASON_ORDER)
    infos = {"tool_error": {"error": "ValueError: x"}, "no_tool_output": {"missing": "a.png"},
             "no_detection": {"head": False, "legs": False, "detected": False},
             "no_head_no_legs": {"head": False, "legs": False, "detected": True},
             "no_head": {"head": False, "legs": True}, "no_legs": {"head": True, "legs": False},
             "empty_mask": {"head": True, "legs": True}}
    for reason, info in infos.items():
        assert fallback_reason("fallback", info) == reason
    assert fallback_reason("prior", {"head": True, "legs": True}) == ""
