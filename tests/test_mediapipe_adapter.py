"""The mediapipe prior generator on real crops (runs in its own env: skipped without it or
without ../shared/data)."""
import os
import os.path as osp
import subprocess

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CUHK01 = osp.join(ROOT, "..", "shared", "data", "cuhk01", "campus")

needs_data = pytest.mark.skipif(not osp.isdir(CUHK01),
                                reason=f"real crops absent ({osp.normpath(CUHK01)})")


@needs_data
def test_mediapipe_generator_on_real_crops(tmp_path, mediapipe_python):
    import shutil
    crops = tmp_path / "crops"
    crops.mkdir()
    names = sorted(os.listdir(CUHK01))[:40]
    for n in names:  # a small subset, in tmp (never in the repository)
        shutil.copy(osp.join(CUHK01, n), crops / n)
    out = tmp_path / "priors.npz"
    r = subprocess.run([mediapipe_python, osp.join(ROOT, "tools", "generate_priors.py"), "--images",
                        str(crops), "--adapter", "mediapipe", "--workers", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from mpn_plugin.priors import PriorCache
    cache = PriorCache.load(str(out), expected_tool="mediapipe", expected_feature_size=(16, 8))
    assert len(cache) == 40
    assert cache.summary()["fallback_fraction"] <= 0.4
    for rel in cache.relpaths():
        rec = cache.get(rel)
        if rec.case == "prior":
            # a pedestrian crop: the person covers a good share of the image, mostly central
            frac = rec.mask_image.mean()
            assert 0.1 < frac < 0.9, (rel, frac)
            cols = np.nonzero(rec.mask_image.any(0))[0]
            assert cols.mean() > 0.2 * rec.mask_image.shape[1]


def test_mediapipe_env_keeps_numpy_below_2_and_has_no_torch(mediapipe_python):
    r = subprocess.run([mediapipe_python, "-c", "import numpy, importlib.util as u; "
                        "print(numpy.__version__, u.find_spec('torch') is None, numpy.__file__)"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    version, no_torch, numpy_file = r.stdout.split()
    assert int(version.split(".")[0]) < 2 and no_torch == "True"
    # its numpy is its own installation, not the training env's (whose torch needs its numpy)
    import numpy
    assert osp.realpath(numpy_file) != osp.realpath(numpy.__file__)
    venv = osp.dirname(osp.dirname(osp.abspath(mediapipe_python)))
    assert osp.realpath(numpy_file).startswith(osp.realpath(venv) + os.sep), (numpy_file, venv)


# ------------------------------------------------ the adapter's own logic, without mediapipe
# (the two tests above need its env or real crops; these run everywhere, on stand-in models)
from types import SimpleNamespace  # noqa: E402

import cv2  # noqa: E402

from mpn_plugin.priors.mediapipe_adapter import HEAD_LANDMARKS, LEG_SIDES, MediapipeAdapter  # noqa: E402


def person_mask(H=100, W=40, top=10, bottom=90):
    m = np.zeros((H, W), bool)
    m[top:bottom, 10:30] = True
    return m


def landmarks(points, H=100, W=40):
    """33 pose landmarks, all invisible except ``points``: {index: (row, col, visibility)}."""
    out = [SimpleNamespace(x=0.5, y=0.5, visibility=0.0) for _ in range(33)]
    for i, (row, col, vis) in points.items():
        out[i] = SimpleNamespace(x=col / W, y=row / H, visibility=vis)
    return out


def test_evidence_counts_only_visible_landmarks_on_the_mask_in_their_zone():
    a, mask = MediapipeAdapter(), person_mask()           # rows 10-89: head zone to row 34
    nose, (knee, ankle) = HEAD_LANDMARKS[0], LEG_SIDES[0]
    both = {nose: (15, 20, 0.9), knee: (60, 20, 0.9), ankle: (85, 20, 0.9)}
    assert a.evidence(landmarks(both), mask) == (True, True)
    assert a.evidence(None, mask) == (False, False)                      # no pose found
    assert a.evidence(landmarks(both), np.zeros_like(mask)) == (False, False)
    head_cut = {**both, nose: (5, 20, 0.9)}           # hallucinated above the mask
    assert a.evidence(landmarks(head_cut), mask) == (False, True)
    assert a.evidence(landmarks({**both, nose: (50, 20, 0.9)}), mask) == (False, True)
    assert a.evidence(landmarks({**both, nose: (15, 20, 0.3)}), mask) == (False, True)
    off_mask = {**both, ankle: (85, 2, 0.9)}          # behind a bicycle: not on the person
    assert a.evidence(landmarks(off_mask), mask) == (True, False)
    no_knee = {**both, knee: (60, 20, 0.1)}
    assert a.evidence(landmarks(no_knee), mask) == (True, False)
    high_ankle = {**both, ankle: (50, 20, 0.9)}       # not in the bottom 25 %
    assert a.evidence(landmarks(high_ankle), mask) == (True, False)
    other_side = {nose: (15, 20, 0.9), LEG_SIDES[1][0]: (60, 25, 0.9),
                  LEG_SIDES[1][1]: (88, 25, 0.9)}           # the right leg is enough
    assert a.evidence(landmarks(other_side), mask) == (True, True)
    outside = {**both, nose: (15, 60, 0.9)}           # x beyond the image
    assert a.evidence(landmarks(outside), mask) == (False, True)


class StandIn:
    """A mediapipe model's ``process``: returns fixed results and records the images it saw."""

    def __init__(self, mask, pose=None):
        self.mask, self.pose, self.seen = mask, pose, []

    def process(self, rgb):
        self.seen.append(rgb.shape)
        return SimpleNamespace(segmentation_mask=self.mask, pose_landmarks=self.pose)


def test_adapter_unions_the_two_masks_at_crop_size_and_decides_the_case(tmp_path):
    import os
    H, W, up = 100, 40, 3
    img = tmp_path / "crop.png"
    cv2.imwrite(str(img), np.full((H, W, 3), 128, np.uint8))
    upper = np.zeros((H * up, W * up), np.float32)
    upper[30:150, 30:90] = 0.9                       # rows 10-49 at crop size: the selfie model
    lower = np.zeros_like(upper)
    lower[150:270, 30:90] = 0.8                      # rows 50-89: the pose model's mask
    nose, (knee, ankle) = HEAD_LANDMARKS[0], LEG_SIDES[0]
    pose = SimpleNamespace(landmark=landmarks({nose: (15, 20, 0.9), knee: (60, 20, 0.9),
                                               ankle: (85, 20, 0.9)}))
    a = MediapipeAdapter(upscale=up)
    selfie, posemodel = StandIn(upper), StandIn(lower, pose)
    a._models, a._pid = (selfie, posemodel), os.getpid()
    mask, case, info = a(str(img))
    assert case == "prior" and info == {"head": True, "legs": True, "detected": True}
    assert selfie.seen == posemodel.seen == [(H * up, W * up, 3)]    # upscaled RGB crop
    assert mask.shape == (H, W) and np.array_equal(mask, person_mask(H, W, 10, 90))
    # a weak soft mask stays below the threshold; without legs the prior falls back
    a._models = (StandIn(upper * 0.5), StandIn(lower, pose))
    mask, case, info = a(str(img))
    assert case == "fallback" and mask is None and info["head"] is False
    a._models = (StandIn(None), StandIn(None, None))
    assert a(str(img)) == (None, "fallback", {"masks": 0})
    with pytest.raises(ValueError, match="cannot read image '.*missing.png'"):
        a(str(tmp_path / "missing.png"))
