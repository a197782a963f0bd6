"""The mediapipe prior generator on real crops (runs in its own env: skipped without it or
without ../shared/data)."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MP_PYTHON = osp.join(ROOT, os.environ.get("MEDIAPIPE_VENV", ".venv-mediapipe"), "bin", "python")
CROPS = osp.join(ROOT, "..", "shared", "data", "market_style_crops")
CUHK01 = osp.join(ROOT, "..", "shared", "data", "cuhk01", "campus")

needs_env = pytest.mark.skipif(not osp.exists(MP_PYTHON),
                               reason="mediapipe env absent (bash third_party/mediapipe_env.sh)")
needs_data = pytest.mark.skipif(not osp.isdir(CUHK01), reason="../shared/data absent")


@needs_env
@needs_data
def test_mediapipe_generator_on_real_crops(tmp_path):
    import shutil
    crops = tmp_path / "crops"
    crops.mkdir()
    names = sorted(os.listdir(CUHK01))[:40]
    for n in names:  # a small subset, in tmp (never in the repository)
        shutil.copy(osp.join(CUHK01, n), crops / n)
    out = tmp_path / "priors.npz"
    r = subprocess.run([MP_PYTHON, osp.join(ROOT, "tools", "generate_priors.py"), "--images",
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


@needs_env
def test_mediapipe_env_keeps_numpy_below_2_and_has_no_torch():
    r = subprocess.run([MP_PYTHON, "-c", "import numpy, importlib.util as u; "
                        "print(numpy.__version__, u.find_spec('torch') is None)"],
                       capture_output=True, text=True, timeout=120)
    version, no_torch = r.stdout.split()
    assert int(version.split(".")[0]) < 2 and no_torch == "True"
    # and the training env is untouched
    import numpy
    assert sys.executable != MP_PYTHON and numpy.__version__
