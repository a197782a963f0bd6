"""Shared fixtures: a tiny synthetic dataset with its prior cache (made once per session)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def tiny_config(**kw):
    from mpn_plugin.data.synthetic import SyntheticConfig
    base = dict(num_train_ids=16, num_test_ids=10, images_per_id=8, num_cameras=4, seed=3,
                workers=1)
    base.update(kw)
    return SyntheticConfig(**base)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A data root holding synthetic_pedestrians (tiny) and its synthetic-maps prior cache."""
    import generate_priors
    from mpn_plugin.data.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp("data"))
    generate_synthetic_dataset(root, tiny_config(), progress=False)
    for h, w in (("128", "64"), ("64", "32")):  # feature sizes 8x4 and 4x2 (the e2e tests)
        generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", root, "--adapter",
                              "synthetic", "--height", h, "--width", w, "--workers", "1"])
    return root
