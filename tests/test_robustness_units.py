"""mpn_plugin/evaluation/robustness.py below the end-to-end sweep (test_robustness_sweep.py):
the sweep's bookkeeping on a stand-in model (which queries it perturbs, what it reuses, the
retained share), part counts, per-part distances by hand, and the split helpers."""
import numpy as np
import pytest
import torch

import mpn_plugin.data  # noqa: F401  (registers synthetic_pedestrians)
from mpn_plugin import compat
from mpn_plugin.evaluation import robustness as rb
from mpn_plugin.models import build_mpn


class StandIn:
    """A ReidModel's interface: the feature of an image is its mean colour (so a perturbed
    query gets another feature), Rank-1/mAP a function of the query features."""

    name = "stand-in"

    def __init__(self):
        self.calls = []

    def features(self, images, desc=None):
        arrays = [rb.read_rgb(x) if isinstance(x, str) else x for x in images]
        self.calls.append([a.shape for a in arrays])
        return torch.from_numpy(np.stack([a.reshape(-1, 3).mean(0) for a in arrays])).float()

    def evaluate(self, qf, gf, query, gallery, seed=0):
        score = float(qf.mean()) / 255.0
        return score, score / 2

    def part_distances(self, qf, gf, query, gallery):
        return [float(qf[:, 0].mean())]

    def describe(self):
        return {"parts": None}


def test_sweep_perturbs_the_queries_only_and_reuses_the_clean_scores_where_nothing_changed(
        tiny_root):
    query, gallery = rb.load_split("synthetic_pedestrians", tiny_root)
    query, gallery = query.subset([0, 1, 2]), gallery.subset(range(5))
    m = StandIn()
    res = rb.run_sweep([m], query, gallery, {"shift": [0.0, 0.2], "cut_head": [0.3]},
                       progress=False)
    clean = res["models"]["stand-in"]
    images = [rb.read_rgb(p) for p in query.paths]
    assert clean["rank1"] == pytest.approx(np.mean([im.mean() for im in images]) / 255, rel=1e-5)
    by_key = {(p["perturbation"], p["level"]): p for p in res["points"]}
    assert set(by_key) == {("shift", 0.0), ("shift", 0.2), ("cut_head", 0.3)}
    still = by_key[("shift", 0.0)]                       # amount 0: the clean queries
    assert still["queries_unchanged"] and still["rank1"] == clean["rank1"]
    assert still["mAP_retained"] == 1.0
    for key in (("shift", 0.2), ("cut_head", 0.3)):
        p = by_key[key]
        assert not p["queries_unchanged"] and p["rank1"] != clean["rank1"], key
        assert p["mAP_retained"] == pytest.approx(p["mAP"] / clean["mAP"])
        assert p["clean_mAP"] == clean["mAP"] and p["part_distances"] is not None
    # features: the gallery (5 paths) and the clean queries once, then the 2 changed points'
    # queries only (the gallery is never perturbed nor extracted again)
    assert [len(c) for c in m.calls] == [5, 3, 3, 3]
    with pytest.raises(ValueError, match=r"unknown perturbations \['blur'\].*'shift'"):
        rb.run_sweep([m], query, gallery, {"blur": [1.0]}, progress=False)


def test_part_count_and_per_part_distances_by_hand():
    assert rb.part_count(build_mpn(3, backbone="resnet18", num_parts=4, dim=8)) == 4
    pcb = compat.models.build_model("pcb_p6", num_classes=3, loss="softmax", pretrained=False)
    assert rb.part_count(pcb) == 6
    assert rb.part_count(torch.nn.Linear(2, 2)) is None
    flagged = torch.nn.Linear(2, 2)
    flagged.num_parts = True                                 # a bool is not a part count
    assert rb.part_count(flagged) is None
    q = torch.tensor([[1.0, 0.0, 3.0, 4.0]])                 # K = 2 parts of 2 dims
    g = torch.tensor([[0.0, 2.0, 3.0, 4.0]])
    assert rb.part_cosine_distances(q, g, 2).tolist() == [[1.0, 0.0]]   # orthogonal, equal
    with pytest.raises(ValueError, match="not a multiple of K=3"):
        rb.part_cosine_distances(q, g, 3)


def test_split_subset_keeps_paths_ids_and_cameras_together(tiny_root):
    query, gallery = rb.load_split("synthetic_pedestrians", tiny_root)
    sub = query.subset([2, 0])
    assert sub.paths == [query.paths[2], query.paths[0]] and len(sub) == 2
    assert sub.pids.tolist() == [query.pids[2], query.pids[0]]
    assert sub.camids.tolist() == [query.camids[2], query.camids[0]]
    assert len(gallery) > len(query) > 0
    assert set(query.pids.tolist()) <= set(gallery.pids.tolist())
