"""Occluded / partial ReID benchmarks (mpn_plugin/data/occluded_datasets.py) on fake roots in
their exact layouts (tests/fake_roots.py): counts, pids, camids, relabelling, errors, and the
train-on-Market-1501 / test-on-a-test-only-set protocol through torchreid's data manager."""
import argparse
import os
import os.path as osp
import shutil

import numpy as np
import pytest

from fake_roots import make_all
from mpn_plugin import compat
from mpn_plugin.config import imagedata_kwargs
from mpn_plugin.data import PriorOptions, register_prior_datasets
from mpn_plugin.evaluation import evaluate_rank
from mpn_plugin.models import feature_stride
from mpn_plugin.train import setup_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
NAMES = ("occluded_duke", "occluded_duke_prior", "occluded_reid", "partial_reid")
TEST_ONLY = ("occluded_reid", "partial_reid")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return make_all(str(tmp_path_factory.mktemp("occluded")))


@pytest.fixture
def registered():
    yield
    register_prior_datasets()  # back to the defaults


def load(name, root, mode="query", **kw):
    return compat.datasets.init_image_dataset(name, root=root, mode=mode, verbose=False, **kw)


def pids(items):
    return sorted({pid for _, pid, *_ in items})


def camids(items):
    return sorted({camid for _, _, camid, *_ in items})


def test_names_are_registered_with_torchreid_after_import():
    import mpn_plugin  # noqa: F401
    registry = vars(compat.datasets)["__image_datasets"]
    assert set(NAMES) <= set(registry)
    assert not {"occluded_reid_prior", "partial_reid_prior"} & set(registry)  # priors: train only


def test_occluded_duke_reads_the_dukemtmc_layout(fake_root):
    ds = load("occluded_duke", fake_root)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (16, 4, 16)
    assert pids(ds.train) == [0, 1, 2, 3]                  # relabelled 1-4 -> 0..N-1
    assert pids(ds.query) == pids(ds.gallery) == [5, 6, 7, 8]  # test pids as in the names
    assert camids(ds.query) == [0] and camids(ds.gallery) == [0, 1]  # c1, c2 -> 0, 1
    path, pid, camid, dsetid = ds.gallery[0]
    assert osp.basename(path) == "0005_c1_f0046183.jpg" and (pid, camid, dsetid) == (5, 0, 0)
    assert ds.dataset_dir == osp.join(fake_root, "Occluded_Duke")


@pytest.mark.parametrize("name,query_folder,ext", [
    ("occluded_reid", "occluded_body_images", ".tif"),
    ("partial_reid", "partial_body_images", ".jpg")])
def test_test_only_sets_query_camid_0_gallery_camid_1(fake_root, name, query_folder, ext):
    ds = load(name, fake_root)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (0, 8, 8)
    assert camids(ds.query) == [0] and camids(ds.gallery) == [1]
    assert pids(ds.query) == pids(ds.gallery) == [1, 2, 3, 5]  # raw pids, not relabelled
    assert all(query_folder in p.split(os.sep) for p, *_ in ds.query)
    assert all(p.endswith(ext) and "whole_body_images" in p for p, *_ in ds.gallery)
    assert ds.num_train_pids == 0 and ds.data == ds.query


def test_partial_reid_ignores_the_releases_occluded_body_images(fake_root):
    ds = load("partial_reid", fake_root)
    assert not any("occluded_body_images" in p for p, *_ in ds.query + ds.gallery)


def test_camids_keep_every_true_match(fake_root):
    """torchreid drops gallery images with the query's pid and camid: with query 0 / gallery 1
    a perfect distance matrix scores Rank-1 = mAP = 1 on the test-only sets."""
    ds = load("occluded_reid", fake_root)
    q = np.array([(pid, camid) for _, pid, camid, _ in ds.query])
    g = np.array([(pid, camid) for _, pid, camid, _ in ds.gallery])
    distmat = (q[:, None, 0] != g[None, :, 0]).astype(np.float32)  # 0 for the same pid
    cmc, mAP = evaluate_rank(distmat, q[:, 0], g[:, 0], q[:, 1], g[:, 1], max_rank=5)
    assert cmc[0] == 1.0 and mAP == 1.0
    with pytest.raises((AssertionError, ValueError)):  # every true match dropped
        evaluate_rank(distmat, q[:, 0], g[:, 0], q[:, 1], q[:1, 1].repeat(len(g)), max_rank=5)


@pytest.mark.parametrize("name,folder,source", [
    ("occluded_duke", "Occluded_Duke", "lightas/Occluded-DukeMTMC-Dataset"),
    ("occluded_reid", "Occluded_REID", "tinajia2012/ICME2018_Occluded-Person-Reidentification"),
    ("partial_reid", "Partial_REID", "Partial Person Re-identification")])
def test_missing_folder_names_the_folder_and_where_to_get_it(tmp_path, name, folder, source):
    with pytest.raises(FileNotFoundError) as err:
        load(name, str(tmp_path))
    assert osp.join(str(tmp_path), folder) in str(err.value) and source in str(err.value)


def test_missing_split_folder_is_named(fake_root, tmp_path):
    shutil.copytree(osp.join(fake_root, "Occluded_REID"), tmp_path / "Occluded_REID")
    shutil.rmtree(tmp_path / "Occluded_REID" / "whole_body_images")
    with pytest.raises(FileNotFoundError, match="whole_body_images/"):
        load("occluded_reid", str(tmp_path))


def test_pvpm_folder_names_are_found(fake_root, tmp_path):
    icme = tmp_path / "ICME2018_Occluded-Person-Reidentification_datasets"
    shutil.copytree(osp.join(fake_root, "Occluded_REID"), icme / "Occluded_REID")
    assert len(load("occluded_reid", str(tmp_path)).query) == 8


@pytest.mark.parametrize("name", TEST_ONLY)
def test_test_only_set_as_source_says_use_it_as_target(fake_root, name):
    with pytest.raises(ValueError, match=f"test-only.*-t {name}"):
        load(name, fake_root, mode="train")
    combined = load(name, fake_root, mode="train", combineall=True)  # torchreid's combineall
    assert len(combined.train) == 16 and combined.num_train_pids == 4


def cfg_for(config, root):
    args = argparse.Namespace(
        config_file=osp.join(ROOT, "configs", "occluded", config), root="", sources=None,
        targets=None, opts=["data.root", root, "data.workers", "0", "train.batch_size", "8",
                            "sampler.num_instances", "2", "test.batch_size", "4"])
    return setup_cfg(args)


@pytest.mark.parametrize("config,target,source_pids", [
    ("mpn_market1501_to_occluded_reid_mobilenetv2.yaml", "occluded_reid", 4),
    ("baseline_market1501_to_partial_reid_mobilenetv2.yaml", "partial_reid", 4),
    ("mpn_occluded_duke_mobilenetv2.yaml", "occluded_duke_prior", 4)])
def test_datamanager_trains_on_source_and_tests_on_target(fake_root, registered, config, target,
                                                        source_pids):
    cfg = cfg_for(config, fake_root)
    assert list(cfg.data.targets) == [target]
    register_prior_datasets(PriorOptions.from_cfg(cfg, enabled=False,
                                                  feature_stride=feature_stride(cfg)))
    dm = compat.data.ImageDataManager(**imagedata_kwargs(cfg, use_gpu=False))
    assert dm.num_train_pids == source_pids
    query, gallery = (dm.test_loader[target][s].dataset for s in ("query", "gallery"))
    if target in TEST_ONLY:
        assert camids(query.query) == [0] and camids(gallery.gallery) == [1]
    batch = next(iter(dm.test_loader[target]["query"]))  # images (.tif too) load and resize
    assert batch["img"].shape == (4, 3, cfg.data.height, cfg.data.width)
    assert set(batch["camid"].tolist()) <= set(camids(query.query))


def test_occluded_duke_prior_follows_the_registered_prior_options(fake_root, registered):
    # as tools/train.py does
    register_prior_datasets(PriorOptions(feature_stride=16, offline_translation_copies=3))
    ds = load("occluded_duke_prior", fake_root, mode="train")
    assert ds.prior_options.offline_translation_copies == 3 and len(ds.train) == 3 * 16
    assert ds.prior_root == osp.join(fake_root, "Occluded_Duke")
    register_prior_datasets(PriorOptions(feature_stride=16, enabled=False))  # re-registered
    ds = load("occluded_duke_prior", fake_root, mode="train")
    assert not ds.prior_options.enabled and len(ds.train) == 16
