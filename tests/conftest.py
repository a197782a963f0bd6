"""Shared fixtures: a tiny synthetic dataset with its prior cache (made once per session)."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")

#: Set by tools/run_tests.sh (the README's test command, which installs everything): a test
#: that would skip for want of what the command installs fails instead, so that no skip can
#: hide an install defect there. ``MPN_TESTS_REQUIRE=mobilenetv2_weights,mediapipe_env``.
REQUIRED = {name for name in os.environ.get("MPN_TESTS_REQUIRE", "").split(",") if name}


def skip_unless_installed(what, present, reason):
    """Skip the calling test when ``present`` is false, with ``reason`` (the install line) as
    the shown reason; fail instead when ``what`` is required (``MPN_TESTS_REQUIRE``)."""
    if present:
        return
    if what in REQUIRED:
        pytest.fail(f"{reason} [required here: MPN_TESTS_REQUIRE={','.join(sorted(REQUIRED))}]",
                    pytrace=False)
    pytest.skip(reason)


def mobilenetv2_weights_installed():
    """Whether the distribution that ships the ImageNet MobileNetV2 weights is installed."""
    from importlib import metadata

    from mpn_plugin.models import pretrained
    try:
        metadata.distribution(pretrained.MOBILENETV2_PACKAGE)
    except metadata.PackageNotFoundError:
        return False
    return True


def needs_mobilenetv2_weights():
    """Call first in a test that builds ``mobilenetv2`` with ``pretrained=True``."""
    from mpn_plugin.models import pretrained
    skip_unless_installed(
        "mobilenetv2_weights", mobilenetv2_weights_installed(),
        f"needs the ImageNet MobileNetV2 weights of {pretrained.MOBILENETV2_PACKAGE}: "
        f"`{pretrained.MOBILENETV2_INSTALL}` (tools/setup_env.sh runs it)")


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Every test starts from the same random state: what it builds (a model's initial
    weights, a sampled batch) does not depend on which tests ran before it, or in what order."""
    import random

    import numpy as np
    import torch
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def tiny_config(**kw):
    from mpn_plugin.data.synthetic import SyntheticConfig
    base = dict(num_train_ids=16, num_test_ids=10, images_per_id=8, num_cameras=4, seed=3,
                workers=1)
    base.update(kw)
    return SyntheticConfig(**base)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A data root holding synthetic_pedestrians (tiny) and its synthetic-maps prior cache."""
    from mpn_plugin.cli import generate_priors
    from mpn_plugin.data.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp("data"))
    generate_synthetic_dataset(root, tiny_config(), progress=False)
    for h, w in (("128", "64"), ("64", "32")):  # feature sizes 8x4 and 4x2 (the e2e tests)
        generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", root, "--adapter",
                              "synthetic", "--height", h, "--width", w, "--workers", "1"])
    return root


@pytest.fixture
def mediapipe_python():
    """The mediapipe env's interpreter (the one generate_priors.py runs mediapipe in); skips
    without the env, fails instead where it is required (``MPN_TESTS_REQUIRE``)."""
    from mpn_plugin.priors.commands import MEDIAPIPE_PYTHON
    skip_unless_installed("mediapipe_env", os.path.isfile(MEDIAPIPE_PYTHON),
                          f"no mediapipe env ({MEDIAPIPE_PYTHON} is missing; "
                          "bash third_party/mediapipe_env.sh creates it)")
    return MEDIAPIPE_PYTHON
