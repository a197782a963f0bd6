"""Extract -> index -> search (issue 17): the exact search's Rank-1 is the evaluator's on the
tiny synthetic set, an interrupted extraction resumes to identical shards, sharded indexes
merged at query time give one index's top-k, and the benchmark runs at a tiny size."""
import csv
import json
import os

import cv2
import faiss  # noqa: E402,F401  (declared: a missing one is an install defect, not a skip)
import numpy as np
import pytest
import torch

from conftest import needs_mobilenetv2_weights  # noqa: E402
from mpn_plugin import compat  # noqa: E402
from mpn_plugin.evaluation import evaluate_features  # noqa: E402
from mpn_plugin.inference import Extraction  # noqa: E402
from mpn_plugin.inference.feature_extractor import FeatureExtractor  # noqa: E402
from mpn_plugin.inference.feature_store import FeatureStore, Item, write_feature_store  # noqa: E402
from mpn_plugin.inference.gallery_index import (  # noqa: E402
    GalleryIndex,
    build_gallery_index,
    search_cmc,
    search_sharded,
)
from mpn_plugin.inference.visrank import GREEN, RED  # noqa: E402
from mpn_plugin.models import build_mpn  # noqa: E402

CONFIG = "configs/mpn_synthetic.yaml"
# Similarities that two float32 computations of the same features (faiss against torch, another
# batch split of the same network) may order differently: ~100 float32 ulps near 1. Rankings
# are compared up to swaps within this margin; every other difference fails.
NEAR_TIE = 1e-5


def near_tied_queries(qf, gf, q_p, g_p, q_c, g_c, eps=NEAR_TIE):
    """(first, any) over the valid queries: how many have their first correct match within
    ``eps`` (cosine) of the wrong image just ahead of it (CMC can move by one rank), and how
    many have any correct match within ``eps`` of an adjacent wrong image (AP can change);
    same-identity same-camera images are dropped first, as the protocol does."""
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    sims = qn.astype(np.float64) @ gn.astype(np.float64).T
    first = any_ = valid = 0
    for i in range(len(qf)):
        keep = ~((g_p == q_p[i]) & (g_c == q_c[i]))
        order = np.argsort(-sims[i][keep], kind="stable")
        s, match = sims[i][keep][order], (g_p[keep] == q_p[i])[order]
        if not match.any():
            continue
        valid += 1
        risky = (np.abs(np.diff(s)) < eps) & (match[:-1] != match[1:])
        r = int(np.argmax(match))
        first += bool(r > 0 and risky[r - 1])
        any_ += bool(risky.any())
    return first, any_, valid


def assert_same_topk_up_to_near_ties(ids, reference, scores, eps=NEAR_TIE):
    """Top-k id lists equal, except where two ids swap places with scores within ``eps``
    (``scores``: the exact (Q, N) similarity matrix)."""
    ids, reference = np.asarray(ids), np.asarray(reference)
    assert ids.shape == reference.shape
    rows, cols = np.nonzero(ids != reference)
    gaps = np.abs(scores[rows, ids[rows, cols]] - scores[rows, reference[rows, cols]])
    assert np.all(gaps < eps), list(zip(rows.tolist(), cols.tolist(), gaps.tolist()))
FAST = ["data.height", "64", "data.width", "32", "data.workers", "0", "mpn.dim", "64",
        "mpn.backbone", "mobilenetv2"]


@pytest.fixture(scope="module")
def pipeline(tiny_root, tmp_path_factory):
    """A checkpoint (16 training identities; ImageNet MobileNetV2 backbone, random heads), the
    evaluator's results for it (tools/train.py test-only), and query/gallery feature stores."""
    from mpn_plugin.inference import extract as extract_features
    from mpn_plugin.train import main as train_main
    needs_mobilenetv2_weights()           # pretrained=True below: skips with the install line
    tmp = tmp_path_factory.mktemp("pipeline")
    torch.manual_seed(0)
    model = build_mpn(num_classes=16, backbone="mobilenetv2", pretrained=True, dim=64)
    compat.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(tmp / "ckpt"))
    ckpt = str(tmp / "ckpt" / "model.pth.tar-1")
    results = train_main(["--config-file", CONFIG, "--root", tiny_root, *FAST, "test.evaluate",
                          "True", "model.load_weights", ckpt, "data.save_dir", str(tmp / "eval")])
    model_args = ["--config-file", CONFIG, "--checkpoint", ckpt, "--batch-size", "32"]
    extract_opts = FAST
    data = os.path.join(tiny_root, "synthetic_pedestrians")
    stores = {}
    for split, folder in (("query", "query"), ("gallery", "bounding_box_test")):
        stores[split] = str(tmp / f"features_{split}")
        extract_features.main([*model_args, "--images", os.path.join(data, folder), "--preset",
                               "market1501", "--out", stores[split], "--shard-size", "16",
                               *extract_opts])
    return dict(tmp=tmp, ckpt=ckpt, results=results["results"]["synthetic_pedestrians"],
                stores=stores, model_args=model_args, data=data, opts=extract_opts)


def test_exact_search_rank1_equals_the_evaluators_and_visrank(pipeline):
    from mpn_plugin.inference import search as search_gallery
    tmp, stores = pipeline["tmp"], pipeline["stores"]
    built = search_gallery.main(["build", "--features", stores["gallery"], "--index",
                                 str(tmp / "index")])
    assert (built["factory"] == "Flat"
            and built["ntotal"] == FeatureStore(stores["gallery"]).num_features)
    out = str(tmp / "search")
    summary = search_gallery.main(["query", "--index", str(tmp / "index"), "--queries",
                                   stores["query"], "--topk", "5", "--visualize", "--out", out])
    evaluator = pipeline["results"]
    assert summary["cmc"]["num_valid"] == summary["num_queries"] > 0
    # the stored features are the evaluator's up to float32 noise (another batch split; faiss
    # against torch): a query's CMC or AP may differ only where a correct and a wrong image
    # are near-tied; those queries give the slack, and must be few for this test to mean much
    qf, q_rows = FeatureStore(stores["query"]).load()
    gf, g_rows = FeatureStore(stores["gallery"]).load()
    q_p, q_c = np.array([r["pid"] for r in q_rows]), np.array([r["camid"] for r in q_rows])
    g_p, g_c = np.array([r["pid"] for r in g_rows]), np.array([r["camid"] for r in g_rows])
    first, any_, valid = near_tied_queries(qf, gf, q_p, g_p, q_c, g_c)
    assert valid == summary["num_queries"] and any_ <= valid // 10, (first, any_, valid)
    cmc_slack, map_slack = first / valid + 1e-6, any_ / valid + 1e-6
    assert abs(summary["cmc"]["rank1"] - evaluator["rank1"]) <= cmc_slack, (summary, evaluator)
    # queries straight from images (the README's third command) give the same answer
    from_images = search_gallery.main(["query", "--index", str(tmp / "index"), "--query-images",
                                       os.path.join(pipeline["data"], "query"), "--query-preset",
                                       "market1501", *pipeline["model_args"], "--topk", "5",
                                       "--out", str(tmp / "search_images"), *pipeline["opts"]])
    assert from_images["cmc"]["num_valid"] == summary["cmc"]["num_valid"]
    assert np.allclose(from_images["cmc"]["cmc"], summary["cmc"]["cmc"], atol=cmc_slack)
    # the evaluator's computation on the stored features: the search's CMC, the engine's mAP
    cmc, mAP = evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), q_p, g_p, q_c, g_c,
                                 "cosine", 50)
    assert np.allclose(summary["cmc"]["cmc"], cmc[:5], atol=cmc_slack)
    assert abs(mAP - evaluator["mAP"]) <= map_slack     # stored features = the evaluator's
    # results.csv: top-5 per query, best first; one PNG per query with green/red borders
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 * len(q_rows)
    pngs = sorted(os.listdir(os.path.join(out, "visrank")))
    assert len(pngs) == len(q_rows)
    img = cv2.imread(os.path.join(out, "visrank", pngs[0]))
    first = rows[0]
    expected = GREEN if first["gallery_pid"] == first["query_pid"] else RED
    x0 = 128 + 90                                      # query tile + extra query spacing
    assert tuple(int(v) for v in img[2, x0 + 2]) == expected


def test_resume_after_an_interrupted_extraction_gives_identical_shards(pipeline, monkeypatch):
    from mpn_plugin.inference import extract as extract_features
    out = str(pipeline["tmp"] / "resumed")
    base = [*pipeline["model_args"], "--images",
            os.path.join(pipeline["data"], "bounding_box_test"), "--preset", "market1501",
            "--out", out]
    args = base + ["--shard-size", "16", *pipeline["opts"]]
    real_extract, calls = FeatureExtractor.extract, []

    def interrupted(self, inputs, skip_unreadable=False):
        calls.append(len(inputs))
        if len(calls) == 3:
            raise KeyboardInterrupt                       # killed during the third shard
        return real_extract(self, inputs, skip_unreadable)

    monkeypatch.setattr(FeatureExtractor, "extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract_features.main(args)
    with pytest.raises(ValueError, match="incomplete"):
        FeatureStore(out)
    monkeypatch.setattr(FeatureExtractor, "extract", real_extract)
    extract_features.main(args)                           # the same command again
    ref = pipeline["stores"]["gallery"]
    names = sorted(n for n in os.listdir(ref) if n.startswith("shard_"))
    assert names == sorted(n for n in os.listdir(out) if n.startswith("shard_"))
    assert len(names) >= 2 * 3
    for n in names:
        assert open(os.path.join(ref, n), "rb").read() == open(os.path.join(out, n), "rb").read(), n
    meta = json.load(open(os.path.join(out, "meta.json")))
    assert meta["complete"] and meta["num_skipped"] == 0
    with pytest.raises(ValueError, match="shard size"):
        extract_features.main(base + ["--shard-size", "8", *pipeline["opts"]])  # refused


class ArrayExtractor:
    """Stand-in model for index tests: the features of 'item<i>' are row i of an array."""

    def __init__(self, features, name="stub"):
        self.features, self.metadata = features, {"kind": name}

    def extract(self, paths, skip_unreadable=False):
        rows = [int(p[4:]) for p in paths]
        return Extraction(torch.from_numpy(self.features[rows]), list(range(len(rows))), [])


def _clustered(n, dim, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n // 10 + 1, dim)).astype(np.float32)[np.arange(n) % (n // 10 + 1)]
    x += 0.3 * rng.standard_normal(x.shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store(path, feats, lo, hi, name="stub", shard_size=300):
    items = [Item(f"item{i}", pid=i % 50, camid=i % 3) for i in range(lo, hi)]
    write_feature_store(ArrayExtractor(feats, name), items, str(path), shard_size=shard_size,
                        progress=False)
    return str(path)


def test_sharded_and_incremental_indexes_give_one_index_topk(tmp_path):
    feats = _clustered(2000, 64, 0)
    queries = _clustered(50, 64, 1)
    a, b = _store(tmp_path / "a", feats, 0, 1100), _store(tmp_path / "b", feats, 1100, 2000)
    one = build_gallery_index([a, b], str(tmp_path / "one"), progress=False)
    s1, i1 = one.search(queries, 10)
    scores = queries.astype(np.float64) @ feats.astype(np.float64).T
    exact = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert_same_topk_up_to_near_ties(i1, exact, scores)
    assert np.allclose(s1, np.take_along_axis(scores, exact, 1), atol=1e-5)
    # two shards merged at query time (e.g. one per machine)
    shards = [build_gallery_index([p], str(tmp_path / f"shard_{n}"), progress=False)
              for n, p in (("a", a), ("b", b))]
    s2, i2, items = search_sharded(shards, queries, 10)
    assert_same_topk_up_to_near_ties(i2, i1, scores)
    assert np.allclose(s1, s2, atol=1e-6)
    assert items[i2[0, 0]][0] == f"item{i2[0, 0]}"
    # incremental: index a, then add b to the saved index (a's shards are not added twice)
    build_gallery_index([a], str(tmp_path / "inc"), progress=False)
    inc = build_gallery_index([a, b], str(tmp_path / "inc"), progress=False)
    assert inc.ntotal == 2000
    assert_same_topk_up_to_near_ties(
        GalleryIndex.load(str(tmp_path / "inc")).search(queries, 10)[1], i1, scores)
    # another model's features are refused
    c = _store(tmp_path / "c", feats, 0, 10, name="other")
    with pytest.raises(ValueError, match="another model"):
        build_gallery_index([c], str(tmp_path / "inc"), progress=False)


def test_ivfpq_index_trained_on_a_sample_recalls_exact_neighbours(tmp_path):
    feats = _clustered(3000, 32, 2)
    queries = feats[::60] + 0.05 * _clustered(50, 32, 3)
    store = _store(tmp_path / "g", feats, 0, 3000, shard_size=1000)
    index = build_gallery_index([store], str(tmp_path / "ivf"), index_type="ivfpq", nlist=16,
                                pq_m=8, nprobe=4, train_size=2000, progress=False)
    assert index.info["factory"] == "IVF16,PQ8np"
    _, ids = GalleryIndex.load(str(tmp_path / "ivf")).search(queries, 10)
    exact = np.argsort(-queries @ feats.T, axis=1)[:, :10]
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids, exact)]) > 0.5
    assert np.mean([a[0] in e for a, e in zip(ids, exact)]) > 0.9     # top-1 among exact top-10


def test_search_cmc_matches_the_evaluator_with_junk_and_unmatched_queries():
    rng = np.random.default_rng(0)
    gf, qf = _clustered(400, 32, 4), _clustered(60, 32, 5)
    g_p, g_c = rng.integers(0, 30, 400), rng.integers(0, 3, 400)
    q_p, q_c = rng.integers(0, 35, 60), rng.integers(0, 3, 60)      # some ids not in gallery
    index = GalleryIndex.create(32, "Flat")
    index.add(gf, [("", int(p), int(c)) for p, c in zip(g_p, g_c)])
    ours = search_cmc(lambda k: index.search(qf, k)[1], q_p, q_c, g_p, g_c, max_rank=10)
    cmc, _ = evaluate_features(torch.from_numpy(qf), torch.from_numpy(gf), q_p, g_p, q_c, g_c,
                               "cosine", 50)
    first, _, valid = near_tied_queries(qf, gf, q_p, g_p, q_c, g_c)    # faiss against torch
    assert first <= valid // 10
    assert np.allclose(ours["cmc"], cmc[:10], atol=first / valid + 1e-6)


def test_benchmark_runs_at_a_tiny_size(tmp_path):
    from mpn_plugin.inference import benchmark_search as bench
    seeds = np.random.default_rng(6).standard_normal((200, 32)).astype(np.float32)
    seed = _store(tmp_path / "seed", seeds / np.linalg.norm(seeds, axis=1, keepdims=True), 0, 200)
    report = bench.main(["--seed-features", seed, "--sizes", "3000", "--queries", "20",
                         "--nlist", "16", "--pq-m", "8", "--train-size", "2000",
                         "--merge-size", "1000", "--out", str(tmp_path / "bench")])
    rows = report["rows"]
    assert [r["index"] for r in rows] == ["exact (streamed IndexFlatIP)", "IVF16,PQ8np"]
    assert 0 < rows[1]["bytes_per_vector"] < rows[0]["bytes_per_vector"]
    assert 0 <= rows[1]["recall@10"] <= 1 and rows[0]["recall@1"] == 1.0
    assert rows[0]["same_seed@1"] > 0.9                # queries are copies of their seed
    assert report["merge_check"]["identical_topk_ids"]
    table = open(tmp_path / "bench" / "benchmark.md").read()
    assert "| 3,000 | IVF16,PQ8np |" in table and "perturbed copies" in table
    with pytest.raises(SystemExit, match="extract_features.py"):
        bench.main(["--seed-features", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
