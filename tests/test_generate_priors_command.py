"""The three traps of issue 18 are gone: the commands that errors print work as printed (also
with the mediapipe adapter), and the cache lands where training looks, with the keys training
finds, whatever image folder generate_priors.py was pointed at."""
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_config
from mpn_plugin import compat
from mpn_plugin.cli import generate_priors
from mpn_plugin.data import PriorOptions, register_prior_datasets
from mpn_plugin.priors import PriorCache, commands
from mpn_plugin.priors.commands import (
    STANDARD_DATASET_DIRS,
    generate_priors_command,
    standard_dataset_dir,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, "tools", "generate_priors.py")
NAME = "synthetic_pedestrians"


def synthetic_root(tmp_path_factory, name, num_train_ids):
    """A synthetic_pedestrians set of ``num_train_ids`` x 4 training images, no prior cache."""
    from mpn_plugin.data.synthetic import generate_synthetic_dataset
    root = str(tmp_path_factory.mktemp(name))
    generate_synthetic_dataset(root, tiny_config(num_train_ids=num_train_ids, num_test_ids=2,
                                                 images_per_id=4), progress=False)
    return root


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """16 training images."""
    return synthetic_root(tmp_path_factory, "cmd", 4)


def train_set(root, options=None):
    """The training dataset exactly as training builds it (128x64, flip)."""
    register_prior_datasets(options or PriorOptions(feature_stride=16))
    tfm = compat.data.transforms.build_transforms(128, 64, transforms=["random_flip"])[0]
    return compat.data.datasets.init_image_dataset(NAME, root=root, mode="train", transform=tfm,
                                                   verbose=False)


def remove_caches(root):
    folder = osp.join(root, NAME)
    for f in os.listdir(folder):
        if f.startswith("priors_"):
            os.remove(osp.join(folder, f))


def printed_command(message):
    m = re.search(r"(?:Generate one|Regenerate it): (.+?); or set", message)
    assert m, message
    return m.group(1)


def run_as_printed(message, tmp_path):
    """Run the command an error message printed, in a shell, from an unrelated folder."""
    command = printed_command(message)
    r = subprocess.run(command, shell=True, cwd=str(tmp_path), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return command


def test_missing_cache_error_prints_a_command_that_works(small_root, tmp_path):
    remove_caches(small_root)
    with pytest.raises(FileNotFoundError) as exc:
        train_set(small_root)[0]
    command = run_as_printed(str(exc.value), tmp_path)
    assert "<" not in command and f"--dataset {NAME}" in command and "--height 128" in command
    item = train_set(small_root)[0]                       # training accepts the cache
    assert item["prior_mask"].shape == (8, 4)


def test_cache_for_other_images_error_prints_a_command_that_works(small_root, tmp_path):
    remove_caches(small_root)
    # a cache made for the test images only: none of the training images has a prior
    generate_priors.main(["--images", osp.join(small_root, NAME, "bounding_box_test"), "--adapter",
                          "synthetic", "--height", "128", "--width", "64", "--workers", "1",
                          "--max-fallback-share", "1"])
    with pytest.raises(KeyError) as exc:
        train_set(small_root)[0]
    # the printed command, run in this process (one subprocess run is enough: test above)
    argv = shlex.split(printed_command(str(exc.value.args[0])))
    assert argv[:2] == [commands.python_command(), TOOL] and argv[-1] == "--overwrite"
    generate_priors.main(argv[2:] + ["--workers", "1"])
    assert train_set(small_root)[0]["prior_mask"].shape == (8, 4)


def test_missing_cache_file_setting_prints_a_command_writing_that_file(small_root, tmp_path):
    options = PriorOptions(feature_stride=16,
                           cache_file=str(tmp_path / "my priors.npz"))   # mpn.prior.cache_file
    with pytest.raises(FileNotFoundError) as exc:
        train_set(small_root, options)[0]
    message = str(exc.value)
    assert message.count("generate_priors.py") == 1, message     # one command: the right one
    argv = shlex.split(re.search(r"make it with: (.+)$", message).group(1))
    assert argv[argv.index("--out") + 1] == str(tmp_path / "my priors.npz")
    generate_priors.main(argv[2:] + ["--workers", "1"])
    assert train_set(small_root, options)[0]["prior_mask"].shape == (8, 4)
    register_prior_datasets()


def test_images_subfolder_cache_lands_where_training_looks(small_root):
    remove_caches(small_root)
    s = generate_priors.main(["--images", osp.join(small_root, NAME, "bounding_box_train"),
                              "--adapter", "synthetic", "--height", "128", "--width", "64",
                              "--workers", "1", "--max-fallback-share", "1"])
    assert osp.dirname(s["path"]) == osp.join(small_root, NAME)     # torchreid's dataset_dir
    ds = train_set(small_root)
    rels = {osp.relpath(p, ds.dataset_dir) for p, *_ in ds.train}
    assert rels == set(PriorCache.load(s["path"]).relpaths())       # the keys training finds
    assert ds[0]["prior_mask"].shape == (8, 4)


def test_standard_dataset_dir_of_nested_folders(tmp_path):
    market = tmp_path / "data" / "market1501" / "Market-1501-v15.09.15" / "bounding_box_train"
    assert standard_dataset_dir(str(market)) == (str(tmp_path / "data" / "market1501"),
                                                 "market1501_prior")
    assert standard_dataset_dir(str(tmp_path / "my_crops")) is None


def test_standard_dataset_dirs_match_the_registry():
    register_prior_datasets()
    registry = vars(compat.data.datasets)["__image_datasets"]
    for folder, name in STANDARD_DATASET_DIRS.items():
        assert registry[name].dataset_dir == folder, name


def test_printed_command_quotes_paths(tmp_path):
    cmd = generate_priors_command("market1501_prior", str(tmp_path / "my data"), 384, 128)
    assert f"--root '{tmp_path / 'my data'}'" in cmd and "--adapter mediapipe" in cmd




@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    """4 training images (mediapipe is slow)."""
    return synthetic_root(tmp_path_factory, "mp", 1)


def test_mediapipe_env_runs_dataset_command(mini_root, mediapipe_python):
    """The issue's first trap: --dataset with the mediapipe env's python used to fail with
    ModuleNotFoundError; it now asks the training env for the image list."""
    r = subprocess.run([mediapipe_python, TOOL, "--dataset", NAME, "--root", mini_root,
                        "--adapter", "synthetic", "--height", "128", "--width", "64",
                        "--workers", "1", "--max-fallback-share", "1"],
                       capture_output=True, text=True,
                       env=dict(os.environ, MPN_PYTHON=sys.executable))
    assert r.returncode == 0, r.stdout + r.stderr
    cache = PriorCache.load(osp.join(mini_root, NAME, "priors_synthetic_8x4.npz"))
    ds = train_set(mini_root)
    assert {osp.relpath(p, ds.dataset_dir) for p, *_ in ds.train} == set(cache.relpaths())


def test_dataset_command_with_mediapipe_adapter(mini_root, mediapipe_python):
    """The command the error prints for a real dataset (--adapter mediapipe), from the training
    environment: the images are listed here and mediapipe runs in .venv-mediapipe."""
    r = subprocess.run([sys.executable, TOOL, "--dataset", NAME, "--root", mini_root, "--adapter",
                        "mediapipe", "--height", "128", "--width", "64", "--workers", "1",
                        "--max-fallback-share", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mediapipe runs in" in r.stdout
    path = osp.join(mini_root, NAME, "priors_mediapipe_8x4.npz")
    cache = PriorCache.load(path, expected_tool="mediapipe", expected_feature_size=(8, 4))
    ds = train_set(mini_root)
    assert {osp.relpath(p, ds.dataset_dir) for p, *_ in ds.train} == set(cache.relpaths())
    assert "--dataset synthetic_pedestrians" in cache.header["command"]
    for rel in cache.relpaths():
        rec = cache.get(rel)
        assert rec.case in ("prior", "fallback") and rec.mask.shape == (8, 4)
        assert (rec.mask_image is None) == (rec.case == "fallback")
    assert np.isfinite(cache.summary()["fallback_fraction"])
