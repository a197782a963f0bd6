"""Market-1501 multi-query (Table 5): each query is replaced by the mean / max of the raw
gt_bbox/ features of its identity in its camera, before the distance; ``none`` is today's
single-query path."""
import glob
import json
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from mpn_plugin import compat
from mpn_plugin.data.synthetic import DATASET_DIR, generate_synthetic_dataset
from mpn_plugin.engine.mixins import EngineMixin
from mpn_plugin.evaluation import evaluate_features
from mpn_plugin.evaluation import multi_query as mq
from mpn_plugin.evaluation.multi_query import gt_bbox_dir, pool_multi_query

FAST = ["data.height", "64", "data.width", "32", "data.workers", "0", "train.batch_size", "16",
        "sampler.num_instances", "4", "test.batch_size", "64", "train.print_freq", "100",
        "mpn.backbone", "resnet18", "mpn.dim", "128"]
GT_BBOX_PER_ID_CAM = 2


@pytest.fixture(scope="module")
def mq_root(tmp_path_factory):
    """A small synthetic root with gt_bbox/ (no prior cache: test-only runs read none)."""
    root = str(tmp_path_factory.mktemp("mq_data"))
    generate_synthetic_dataset(root, tiny_config(num_train_ids=8, num_test_ids=6,
                                                 images_per_id=6,
                                                 gt_bbox_per_id_cam=GT_BBOX_PER_ID_CAM),
                               progress=False)
    return root


# ----------------------------------------------------------------------------- by hand
# Two queries (camera 0), three gallery images (camera 1), squared euclidean distances.
QF = torch.tensor([[0., 3.], [3., 0.]])
Q_PIDS, Q_CAMS = np.array([1, 2]), np.array([0, 0])
GF = torch.tensor([[4., 0.], [0., 4.], [4., 2.]])
G_PIDS, G_CAMS = np.array([1, 2, 1]), np.array([1, 1, 1])
# gt_bbox: pid 1 cam 0 (the query itself + 2), pid 2 cam 0 (the query itself + 2); pid 1 in
# camera 1 and pid 3 are no query's (identity, camera): ignored
MF = torch.tensor([[0., 3.], [6., 1.], [6., 2.],
                   [3., 0.], [-5., 2.], [-7., 4.],
                   [100., 100.], [9., 9.]])
M_PIDS, M_CAMS = np.array([1, 1, 1, 2, 2, 2, 1, 3]), np.array([0, 0, 0, 0, 0, 0, 1, 0])


def cmc_map(qf):
    cmc, mAP = evaluate_features(qf, GF, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, "euclidean", 3)
    return cmc.tolist(), float(mAP)


def test_mean_and_max_pooling_match_hand_computed_features():
    mean = pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "mean")
    mx = pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "max")
    # pid 1: mean of (0,3) (6,1) (6,2) = (4,2), max (6,3); pid 2: mean of (3,0) (-5,2) (-7,4)
    # = (-3,2), max (3,4); the camera-1 image (100,100) of pid 1 is not pooled
    assert torch.allclose(mean, torch.tensor([[4., 2.], [-3., 2.]]))
    assert torch.equal(mx, torch.tensor([[6., 3.], [3., 4.]]))
    # a query whose (identity, camera) has no gt_bbox image keeps its own feature
    out = pool_multi_query(QF, Q_PIDS, np.array([0, 5]), MF, M_PIDS, M_CAMS, "mean")
    assert torch.allclose(out[0], mean[0]) and torch.equal(out[1], QF[1])
    assert pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "none") is QF
    with pytest.raises(ValueError, match="mean"):
        pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "avg")


def test_cmc_and_map_by_hand_single_mean_max():
    # single query: q1 (0,3) -> g1 (d 1, pid 2), g2 (17, pid 1), g0 (25, pid 1): hits at 2, 3,
    #   AP (1/2 + 2/3) / 2 = 7/12; q2 (3,0) -> g0 (1, pid 1), g2 (5, pid 1), g1 (25, pid 2):
    #   hit at 3, AP 1/3. Rank-1 0, CMC (0, 1/2, 1), mAP (7/12 + 1/3) / 2 = 11/24
    cmc, mAP = cmc_map(QF)
    assert cmc == pytest.approx([0.0, 0.5, 1.0]) and mAP == pytest.approx(11 / 24)
    # mean: q1 (4,2) -> g2 (0), g0 (4), g1 (20): AP 1; q2 (-3,2) -> g1 (13), g2 (49), g0 (53): AP 1
    cmc, mAP = cmc_map(pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "mean"))
    assert cmc == pytest.approx([1.0, 1.0, 1.0]) and mAP == pytest.approx(1.0)
    # max: q1 (6,3) -> g2 (5), g0 (13), g1 (37): AP 1; q2 (3,4) -> g2 (5, pid 1), g1 (9, pid 2),
    #   g0 (17): hit at 2, AP 1/2. Rank-1 1/2, mAP 3/4
    cmc, mAP = cmc_map(pool_multi_query(QF, Q_PIDS, Q_CAMS, MF, M_PIDS, M_CAMS, "max"))
    assert cmc == pytest.approx([0.5, 1.0, 1.0]) and mAP == pytest.approx(0.75)


# ----------------------------------------------------------------------------- engine
class _Engine(EngineMixin):
    """EngineMixin's evaluation on a fixed feature extractor (no torchreid Engine needed)."""

    def __init__(self, datamanager, multi_query):
        self.model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d((4, 2)), torch.nn.Flatten())
        self.use_gpu, self.datamanager, self.multi_query = False, datamanager, multi_query

    def parse_data_for_eval(self, data):
        return data["img"], data["pid"], data["camid"]

    def evaluate(self, name="synthetic_pedestrians"):
        loaders = self.datamanager.test_loader[name]
        return self._evaluate(name, loaders["query"], loaders["gallery"], dist_metric="cosine",
                              normalize_feature=True, ranks=(1, 5))


def _datamanager(root):
    return compat.data.ImageDataManager(
        root=root, sources="synthetic_pedestrians", height=64, width=32, batch_size_train=8,
        batch_size_test=16, workers=0, train_sampler="RandomSampler", use_gpu=False)


def test_none_is_todays_single_query_path_bit_for_bit(mq_root, monkeypatch):
    dm = _datamanager(mq_root)
    monkeypatch.setattr("mpn_plugin.engine.mixins.gt_bbox_loader",
                        lambda *a: pytest.fail("multi_query none read gt_bbox/"))
    engine = _Engine(dm, "none")
    rank1, mAP = engine.evaluate()
    # today's path by hand: extract, normalise, rank
    loaders = dm.test_loader["synthetic_pedestrians"]
    qf, q_pids, q_camids = engine._extract(loaders["query"], "query")
    gf, g_pids, g_camids = engine._extract(loaders["gallery"], "gallery")
    cmc, want_map = evaluate_features(F.normalize(qf, dim=1), F.normalize(gf, dim=1), q_pids,
                                      g_pids, q_camids, g_camids, "cosine", 50)
    assert rank1 == cmc[0] and mAP == want_map
    assert "multi_query" not in engine.last_results["synthetic_pedestrians"]


def test_engine_pools_gt_bbox_features_through_the_test_transform(mq_root):
    dm = _datamanager(mq_root)
    engine = _Engine(dm, "mean")
    loaders = dm.test_loader["synthetic_pedestrians"]
    query = loaders["query"].dataset
    gt_loader = mq.gt_bbox_loader(loaders["query"], "mean")
    # every query's own crop + GT_BBOX_PER_ID_CAM more, read with the query's test transform
    assert len(gt_loader.dataset) == (1 + GT_BBOX_PER_ID_CAM) * len(query.query)
    assert gt_loader.dataset.transform is query.transform
    keys = {(p, c) for _, p, c, *_ in query.query}
    assert {(p, c) for _, p, c in gt_loader.dataset.items} == keys
    qf, q_pids, q_camids = engine._extract(loaders["query"], "query")
    mf, m_pids, m_camids = engine._extract(gt_loader, "gt_bbox")
    gf, g_pids, g_camids = engine._extract(loaders["gallery"], "gallery")
    pooled = pool_multi_query(qf, q_pids, q_camids, mf, m_pids, m_camids, "mean")
    cmc, want_map = evaluate_features(F.normalize(pooled, dim=1), F.normalize(gf, dim=1),
                                      q_pids, g_pids, q_camids, g_camids, "cosine", 50)
    rank1, mAP = engine.evaluate()
    assert rank1 == cmc[0] and mAP == want_map
    assert engine.last_results["synthetic_pedestrians"]["multi_query"] == "mean"


def test_missing_gt_bbox_folder_and_other_datasets_fail_clearly(mq_root, tmp_path):
    from mpn_plugin.train import main
    root = tmp_path / "no_gt_bbox"
    shutil.copytree(osp.join(mq_root, DATASET_DIR), root / DATASET_DIR,
                    ignore=shutil.ignore_patterns("gt_bbox"))
    with pytest.raises(FileNotFoundError, match=r"gt_bbox.*does not exist.*--gt-bbox-per-id-cam"):
        main(["--config-file", "configs/mpn_synthetic.yaml", "--root", str(root), *FAST,
              "data.save_dir", str(tmp_path / "log"), "test.evaluate", "True",
              "test.multi_query", "max"])
    with pytest.raises(ValueError, match="multi_query must be one of none, mean, max"):
        main(["--config-file", "configs/mpn_synthetic.yaml", "--root", mq_root,
              "test.multi_query", "avg"])
    other = compat.ImageDataset([("a.jpg", 0, 0, 0)], [("b.jpg", 1, 0, 0)],
                                [("c.jpg", 1, 1, 0)], verbose=False)
    with pytest.raises(ValueError, match="'dukemtmcreid' .* not a Market-1501-like dataset"):
        gt_bbox_dir(other, "mean", "dukemtmcreid")


def test_synthetic_gt_bbox_layout(mq_root):
    d = osp.join(mq_root, DATASET_DIR)
    queries = sorted(osp.basename(p) for p in glob.glob(osp.join(d, "query", "*.jpg")))
    gt = sorted(osp.basename(p) for p in glob.glob(osp.join(d, "gt_bbox", "*.jpg")))
    assert set(queries) <= set(gt) and len(gt) == (1 + GT_BBOX_PER_ID_CAM) * len(queries)
    for q in queries:   # byte copies, as Market-1501's query crops are gt_bbox boxes
        with open(osp.join(d, "query", q), "rb") as f, open(osp.join(d, "gt_bbox", q), "rb") as g:
            assert f.read() == g.read(), q
    meta = json.load(open(osp.join(d, "generator.json")))
    assert meta["summary"]["split_sizes"]["gt_bbox"] == len(gt)
    assert meta["config"]["gt_bbox_per_id_cam"] == GT_BBOX_PER_ID_CAM


def test_gt_bbox_option_leaves_the_other_files_and_the_hash_unchanged(mq_root, tmp_path):
    from mpn_plugin.data.synthetic import SyntheticConfig, config_hash
    assert config_hash(SyntheticConfig()) == config_hash(SyntheticConfig(gt_bbox_per_id_cam=0))
    assert config_hash(SyntheticConfig()) != config_hash(SyntheticConfig(gt_bbox_per_id_cam=1))
    generate_synthetic_dataset(str(tmp_path), tiny_config(num_train_ids=8, num_test_ids=6,
                                                          images_per_id=6), progress=False)
    a, b = osp.join(mq_root, DATASET_DIR), osp.join(str(tmp_path), DATASET_DIR)
    files = sorted(osp.relpath(p, b) for p in glob.glob(osp.join(b, "**", "*.*"), recursive=True)
                   if p.endswith((".jpg", ".png")))
    assert not any("gt_bbox" in f for f in files) and len(files) > 100
    for f in files:
        assert open(osp.join(a, f), "rb").read() == open(osp.join(b, f), "rb").read(), f


def test_train_main_evaluates_multi_query_end_to_end(mq_root, tmp_path):
    from mpn_plugin.train import main
    out = main(["--config-file", "configs/mpn_synthetic.yaml", "--root", mq_root, *FAST,
                "data.save_dir", str(tmp_path), "test.evaluate", "True",
                "test.multi_query", "mean"])["results"][DATASET_DIR]
    assert out["multi_query"] == "mean" and out["num_query_ids"] == 6 and 0 < out["mAP"] <= 1
    log = open(glob.glob(str(tmp_path / "test.log-*"))[0]).read()
    n = len(glob.glob(osp.join(mq_root, DATASET_DIR, "query", "*.jpg")))
    assert (f"Multi-query (mean pooling): {n * (1 + GT_BBOX_PER_ID_CAM)} gt_bbox images for {n} "
            f"queries ({1 + GT_BBOX_PER_ID_CAM}-{1 + GT_BBOX_PER_ID_CAM} per query)") in log
