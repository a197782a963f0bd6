"""The vectorised evaluator equals torchreid's evaluate_rank (market1501 and cuhk03 metrics),
chunked or not, and the chunked path never holds a query x gallery matrix."""
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpn_plugin import compat
from mpn_plugin.evaluation import (
    auto_chunk_size,
    compute_distance_matrix,
    evaluate_features,
    evaluate_rank,
    rank_and_evaluate,
)
from mpn_plugin.evaluation import distance as distance_module


def problem(seed, Q=50, G=400, ids=20, cams=4, dim=16, absent=3):
    """Random features; ``absent`` query identities never appear in the gallery, and with few
    cameras some queries only have same-camera matches (no valid match: skipped)."""
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(0, ids + absent, Q)          # ids >= `ids` are absent from the gallery
    g_pids = rng.integers(0, ids, G)
    return (torch.from_numpy(rng.standard_normal((Q, dim), dtype=np.float32)),
            torch.from_numpy(rng.standard_normal((G, dim), dtype=np.float32)),
            q_pids, g_pids, rng.integers(0, cams, Q), rng.integers(0, cams, G))


def torchreid_rank(d, qp, gp, qc, gc, max_rank=50, cuhk03=False):
    return compat.metrics.evaluate_rank(d, qp, gp, qc, gc, max_rank=max_rank,
                                        use_metric_cuhk03=cuhk03, use_cython=False)


def assert_identical(ours, ref):
    cmc, mAP = ours
    ref_cmc, ref_map = ref
    assert cmc.dtype == np.float32
    assert np.array_equal(cmc[:len(ref_cmc)], ref_cmc)          # bitwise
    assert np.all(cmc[len(ref_cmc):] == 1.0)                    # padding past torchreid's end
    assert abs(mAP - ref_map) <= 1e-12


def naive_market(d, qp, gp, qc, gc, max_rank):
    """Reference written from the protocol: per query, drop same-id same-camera images, CMC is
    1 from the first correct match on, AP = mean of precision at each correct match."""
    cmcs, aps = [], []
    for i in range(len(qp)):
        order = np.argsort(d[i])
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        hits = (gp[order] == qp[i])[keep]
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1                         # 1-based kept ranks
        cmcs.append(np.arange(1, max_rank + 1) >= ranks[0])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return np.mean(cmcs, 0), np.mean(aps)


# --- market1501 metric ---------------------------------------------------------------------

@pytest.mark.parametrize("seed,Q,G,ids,cams", [(0, 50, 400, 20, 4), (1, 61, 500, 30, 6),
                                               (2, 30, 300, 5, 2), (3, 80, 120, 60, 3)])
@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_equals_torchreid_market_metric(seed, Q, G, ids, cams, chunk):
    qf, gf, qp, gp, qc, gc = problem(seed, Q, G, ids, cams)
    d = compute_distance_matrix(qf, gf, "euclidean").numpy()
    skipped = sum(not np.any((gp == p) & (gc != c)) for p, c in zip(qp, qc))
    assert skipped > 0 or seed == 2                  # the problems include skipped queries
    assert_identical(evaluate_rank(d, qp, gp, qc, gc, chunk_size=chunk),
                     torchreid_rank(d, qp, gp, qc, gc))


def test_float64_and_torch_distmat_equal_torchreid():
    qf, gf, qp, gp, qc, gc = problem(5)
    d = np.random.default_rng(5).random((50, 400))                 # float64
    assert_identical(evaluate_rank(d, qp, gp, qc, gc), torchreid_rank(d, qp, gp, qc, gc))
    d32 = compute_distance_matrix(qf, gf, "cosine")
    assert_identical(evaluate_rank(d32, qp, gp, qc, gc, max_rank=10),
                     torchreid_rank(d32.numpy(), qp, gp, qc, gc, max_rank=10))


def test_ties_give_torchreids_order():
    # distances on 4 levels: most gallery images tie; ties are broken by np.argsort as torchreid
    qf, gf, qp, gp, qc, gc = problem(6, Q=40, G=300, ids=10, cams=3)
    d = np.random.default_rng(6).integers(0, 4, (40, 300)).astype(np.float32)
    for chunk in (None, 3, 16):
        assert_identical(evaluate_rank(d, qp, gp, qc, gc, chunk_size=chunk),
                         torchreid_rank(d, qp, gp, qc, gc))


def test_hand_worked_example():
    # gallery: g0 id1/cam0, g1 id2/cam1, g2 id1/cam1, g3 id3/cam0, g4 id1/cam2
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 0, 2])
    q_pids, q_cams = np.array([1, 2, 3]), np.array([0, 1, 1])
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5],     # g0 junk; kept g1 g2* g3 g4*: hits at 2, 4
                  [0.1, 0.2, 0.3, 0.4, 0.5],     # only id-2 image is same camera: skipped
                  [0.5, 0.4, 0.3, 0.05, 0.2]])   # g3 first: hit at 1
    cmc, mAP = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    assert cmc.tolist() == [0.5, 1.0, 1.0, 1.0]
    assert mAP == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1.0) / 2)    # 0.75
    cmc, _ = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=7)   # G = 5 < 7
    assert cmc.tolist() == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_kept_list_shorter_than_max_rank_is_padded():
    # query 0 has 20 same-camera images among 60: 40 kept < max_rank 50 (torchreid fails here)
    rng = np.random.default_rng(7)
    g_pids, g_cams = np.r_[np.zeros(20, int), rng.integers(1, 5, 40)], rng.integers(1, 3, 60)
    g_cams[:20] = 0
    g_pids[20], g_cams[20] = 0, 1                              # one valid match for id 0
    q_pids, q_cams = np.array([0, 1, 2]), np.array([0, 0, 0])
    d = rng.random((3, 60))
    cmc, mAP = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    ref_cmc, ref_map = naive_market(d, q_pids, g_pids, q_cams, g_cams, 50)
    assert np.allclose(cmc, ref_cmc) and mAP == pytest.approx(ref_map, abs=1e-12)


def test_no_valid_query_raises():
    d = np.array([[0.1, 0.2]], np.float32)
    with pytest.raises(ValueError, match="no query has a correct match"):
        evaluate_rank(d, [0], [0, 1], [0], [0, 1])               # only same-camera match
    with pytest.raises(ValueError, match="gallery: 3 pids"):
        evaluate_rank(d, [0], [0, 1, 2], [0], [0, 1, 2])
    with pytest.raises(ValueError, match="needs query and gallery images"):
        evaluate_rank(np.zeros((1, 0)), [0], [], [0], [])


# --- cuhk03 metric (single-gallery-shot, random draws) ---------------------------------------

@pytest.mark.parametrize("seed,Q,G,ids,cams,chunk", [(0, 40, 300, 15, 3, None),
                                                     (1, 61, 500, 30, 6, 7),
                                                     (2, 25, 200, 80, 2, 1)])
def test_cuhk03_metric_identical_with_same_numpy_seed(seed, Q, G, ids, cams, chunk):
    qf, gf, qp, gp, qc, gc = problem(seed, Q, G, ids, cams)
    d = compute_distance_matrix(qf, gf, "cosine").numpy()
    np.random.seed(seed)
    ref = torchreid_rank(d, qp, gp, qc, gc, cuhk03=True)
    ref_next = np.random.rand()
    np.random.seed(seed)
    ours = evaluate_rank(d, qp, gp, qc, gc, use_metric_cuhk03=True, chunk_size=chunk)
    assert_identical(ours, ref)
    assert np.random.rand() == ref_next        # same number of draws from numpy's global state


def test_cuhk03_metric_on_hand_example():
    # query 0 (see test_hand_worked_example): kept ids in rank order id2 (g1), id1 (g2 or g4),
    # id3 (g3). Drawing g2 puts the match 2nd, g4 puts it 3rd; query 2 always finds g3 first.
    g_pids, g_cams = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 0, 2])
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.05, 0.2]])
    rank2 = []
    for seed in range(40):
        np.random.seed(seed)
        cmc, mAP = evaluate_rank(d, [1, 3], g_pids, [0, 1], g_cams, max_rank=4,
                                 use_metric_cuhk03=True)
        assert cmc[0] == 0.5 and cmc[2] == 1.0 and cmc[3] == 1.0 and mAP == pytest.approx(0.75)
        assert 0.5 <= cmc[1] <= 1.0
        rank2.append((cmc[1] - 0.5) * 2)                     # fraction of repeats drawing g2
    assert np.mean(rank2) == pytest.approx(0.5, abs=0.05)   # 400 fair coin flips


# --- distances and the chunked path -------------------------------------------------------------

@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_distances_equal_torchreid_bitwise(metric):
    qf, gf, *_ = problem(8, Q=61, G=300, dim=64)
    ref = compat.metrics.compute_distance_matrix(qf, gf, metric)
    assert torch.equal(compute_distance_matrix(qf, gf, metric), ref)
    # chunks of queries against the prepared gallery: the same values, up to the last bit
    gallery = distance_module.prepare_gallery(gf, metric)
    for step in (1, 8, 64):
        parts = [distance_module.chunk_distances(qf[s:s + step], gallery, metric)
                 for s in range(0, 61, step)]
        assert torch.allclose(torch.cat(parts), ref, rtol=1e-6, atol=1e-6)


def test_distance_values_by_hand():
    q, g = torch.tensor([[1.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    # squared euclidean (no square root, as torchreid): 1 + 4 = 5 and 9 + 4 = 13
    assert compute_distance_matrix(q, g, "euclidean").tolist() == [[5.0], [13.0]]
    # 1 - cosine: cos = 0 and 4/5
    assert torch.allclose(compute_distance_matrix(q, g, "cosine"), torch.tensor([[1.0], [0.2]]))
    with pytest.raises(ValueError, match="'cosine'"):
        compute_distance_matrix(q, g, "manhattan")


def chunked_distances(qf, gf, metric, chunk):
    """The distances evaluate_features ranks: chunks of ``chunk`` queries against the prepared
    gallery (the same calls, the same shapes)."""
    gallery = distance_module.prepare_gallery(gf, metric)
    return torch.cat([distance_module.chunk_distances(qf[s:s + chunk], gallery, metric)
                      for s in range(0, len(qf), chunk)])


def assert_torchreid_pipeline_up_to_the_last_bit(ours, qf, gf, qp, gp, qc, gc, metric, chunk,
                                                 **kw):
    """The chunked evaluation is torchreid's ``evaluate_rank(compute_distance_matrix(...))``
    within the contract of evaluation/distance.py: a chunk's distances equal the full matrix's
    up to the last bit (BLAS picks kernels by matrix size), and the ranking of those distances
    is torchreid's, bit for bit. (Comparing with the full matrix's ranking bit for bit would
    depend on near-ties that the last bit can flip.)"""
    full = compat.metrics.compute_distance_matrix(qf, gf, metric)
    chunked = chunked_distances(qf, gf, metric, chunk)
    assert torch.allclose(chunked, full, rtol=1e-6, atol=1e-6)
    assert_identical(ours, torchreid_rank(chunked.numpy(), qp, gp, qc, gc, **kw))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("chunk", [1, 4, 7, 8, 60, 1000])
def test_chunked_features_equal_torchreid_pipeline(metric, chunk):
    # Q = 61 is not a multiple of any chunk size here
    qf, gf, qp, gp, qc, gc = problem(9, Q=61, G=500, ids=30, cams=6, dim=32)
    ours = evaluate_features(qf, gf, qp, gp, qc, gc, metric, chunk_size=chunk)
    assert_torchreid_pipeline_up_to_the_last_bit(ours, qf, gf, qp, gp, qc, gc, metric, chunk)


def test_normalize_and_cuhk03_through_features():
    qf, gf, qp, gp, qc, gc = problem(10, Q=30, G=200, ids=15, cams=3)
    np.random.seed(1)
    ours = evaluate_features(qf, gf, qp, gp, qc, gc, "euclidean", 20, normalize=True,
                             chunk_size=8, use_metric_cuhk03=True)
    np.random.seed(1)                                  # the cuhk03 metric's random draws
    assert_torchreid_pipeline_up_to_the_last_bit(ours, F.normalize(qf), F.normalize(gf), qp, gp,
                                                 qc, gc, "euclidean", 8, max_rank=20,
                                                 cuhk03=True)


def test_chunked_path_never_builds_query_by_gallery(monkeypatch):
    Q, G, chunk = 400, 5000, 16
    qf, gf, qp, gp, qc, gc = problem(11, Q=Q, G=G, ids=100, cams=6, dim=8)
    shapes, real = [], distance_module.chunk_distances

    def spy(q, gallery, metric):
        out = real(q, gallery, metric)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(distance_module, "chunk_distances", spy)
    tracemalloc.start()
    cmc, mAP = evaluate_features(qf, gf, qp, gp, qc, gc, "cosine", chunk_size=chunk)
    _, peak = tracemalloc.get_traced_memory()                   # numpy allocations
    tracemalloc.stop()
    assert shapes == [(chunk, G)] * (Q // chunk)                 # torch: one chunk at a time
    # argsort indices, gathered ids and masks of one chunk: ~17 bytes x chunk x G = 1.4 MB,
    # far below a single (Q, G) int64 array (16 MB)
    assert peak < Q * G * 8 / 4
    assert_torchreid_pipeline_up_to_the_last_bit((cmc, mAP), qf, gf, qp, gp, qc, gc, "cosine",
                                                 chunk)


def test_auto_chunk_size_bounds_a_chunk():
    assert auto_chunk_size(15913) == 1024 and auto_chunk_size(82161) == 192
    assert auto_chunk_size(10 ** 9) == 64                       # at least 64 rows
    for g in (100, 15913, 82161, 262144):
        assert auto_chunk_size(g) % 64 == 0 and auto_chunk_size(g) * g <= 1 << 24


# --- engine step ------------------------------------------------------------------------------

def test_rank_and_evaluate_modes():
    qf, gf, qp, gp, qc, gc = problem(12, Q=40, G=200, ids=15, cams=3)
    cmc, mAP, dist = rank_and_evaluate(qf, gf, qp, gp, qc, gc, "cosine")
    assert dist is None
    cmc2, mAP2, dist = rank_and_evaluate(qf, gf, qp, gp, qc, gc, "cosine", return_distmat=True)
    assert np.array_equal(dist, compat.metrics.compute_distance_matrix(qf, gf, "cosine").numpy())
    assert np.array_equal(cmc, cmc2) and mAP == mAP2
    # re-ranking: torchreid's re_ranking on q-g, q-q and g-g distances, then the ranking
    _, _, rr = rank_and_evaluate(qf, gf, qp, gp, qc, gc, "euclidean", rerank=True)
    ref = compat.utils.re_ranking(*(compat.metrics.compute_distance_matrix(a, b).numpy()
                                    for a, b in ((qf, gf), (qf, qf), (gf, gf))))
    assert np.array_equal(rr, ref)
