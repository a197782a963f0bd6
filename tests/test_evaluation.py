"""The vectorised evaluator equals torchreid's evaluate_rank, chunked or not."""
import numpy as np
import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.evaluation import distance_matrix, evaluate_features, evaluate_rank


def problem(seed, Q=60, G=500, ids=30, cams=6, dim=16):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.standard_normal((Q, dim)).astype(np.float32)),
            torch.from_numpy(rng.standard_normal((G, dim)).astype(np.float32)),
            rng.integers(0, ids, Q), rng.integers(0, ids, G),
            rng.integers(0, cams, Q), rng.integers(0, cams, G))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_torchreid_market_metric(seed):
    qf, gf, qp, gp, qc, gc = problem(seed)
    for metric in ("cosine", "euclidean"):
        d = compat.metrics.compute_distance_matrix(qf, gf, metric).numpy()
        assert np.allclose(distance_matrix(qf, gf, metric).numpy(), d, atol=1e-4)
        ref_cmc, ref_map = compat.metrics.evaluate_rank(d, qp, gp, qc, gc, use_cython=False)
        cmc, mAP = evaluate_rank(d, qp, gp, qc, gc, chunk_size=7)
        assert np.abs(cmc - ref_cmc).max() <= 1e-6 and abs(mAP - ref_map) <= 1e-6


def test_queries_without_valid_match_are_skipped():
    # query 0's only same-pid gallery image is from the same camera: skipped, as in torchreid
    d = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], np.float32)
    qp, gp = np.array([0, 1]), np.array([0, 1, 2])
    qc, gc = np.array([0, 0]), np.array([0, 1, 1])
    cmc, mAP = evaluate_rank(d, qp, gp, qc, gc, max_rank=3)
    # query 1: ranking g2 (0.1), g1 (0.2, hit at rank 2): CMC [0, 1, 1], AP = 1/2
    assert cmc.tolist() == [0.0, 1.0, 1.0] and mAP == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gallery"):
        evaluate_rank(d[:1], qp[:1], gp, qc[:1], gc, max_rank=3)


def test_gallery_smaller_than_max_rank_works():
    qf, gf, qp, gp, qc, gc = problem(3, Q=5, G=12, ids=3, cams=2)
    cmc, _ = evaluate_features(qf, gf, qp, gp, qc, gc, max_rank=50)
    assert cmc.shape == (50,) and cmc[-1] == 1.0


@pytest.mark.parametrize("chunk", [1, 7, 60, 1000])
def test_chunked_features_equal_full(chunk):
    qf, gf, qp, gp, qc, gc = problem(4)
    d = distance_matrix(qf, gf, "cosine").numpy()
    full = evaluate_rank(d, qp, gp, qc, gc)
    got = evaluate_features(qf, gf, qp, gp, qc, gc, "cosine", chunk_size=chunk)
    assert np.allclose(got[0], full[0]) and got[1] == pytest.approx(full[1], abs=1e-6)
