"""tools/robustness_sweep.py end to end on the tiny synthetic set (untrained MPN, Baseline and
torchreid ResNet-18 checkpoints), and the per-part distances it reports."""
import json
import os.path as osp

import numpy as np
import pytest
import torch

from mpn_plugin.build import build_model
from mpn_plugin.cli import robustness_sweep
from mpn_plugin.evaluation.robustness import matching_part_distances, part_cosine_distances
from mpn_plugin.train import build_parser, setup_cfg

FAST = ["data.height", "64", "data.width", "32", "mpn.backbone", "resnet18", "mpn.dim", "64",
        "test.batch_size", "64", "data.workers", "0"]
CONFIGS = {"MPN": "configs/mpn_synthetic.yaml", "Baseline": "configs/ablation/baseline.yaml",
           "R18": "configs/ide_synthetic.yaml"}


@pytest.fixture(scope="module")
def model_specs(tmp_path_factory):
    """NAME=CONFIG:CHECKPOINT of untrained models, saved as tools/train.py's checkpoints are
    (``state_dict``; the loader reads the identities from the classifier)."""
    out = tmp_path_factory.mktemp("ckpt")
    specs = []
    for name, config in CONFIGS.items():
        cfg = setup_cfg(build_parser().parse_args(["--config-file", config, *FAST,
                                                   "model.pretrained", "False"]))
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=16)
        path = str(out / f"{name}.pth.tar-1")
        torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)
        specs.append(f"{name}={config}:{path}")
    return specs


def run_tool(root, out_dir, specs, *args):
    argv = ["--root", root, "--out-dir", str(out_dir), "--threads", "1", "--no-progress"]
    for s in specs:
        argv += ["--model", s]
    return robustness_sweep.main(argv + list(args) + FAST)


def test_sweep_end_to_end_writes_every_point_json_png_and_summary(tiny_root, tmp_path, model_specs,
                                                                  capsys):
    res = run_tool(tiny_root, tmp_path, model_specs, "--perturbations", "shift", "occlusion_rect",
                   "--levels", "shift=0,0.2", "--levels", "occlusion_rect=0,0.3")
    saved = json.load(open(tmp_path / "robustness.json"))
    points = saved["points"]
    assert len(points) == 3 * 2 * 2
    swept = {"shift": (0, 0.2), "occlusion_rect": (0, 0.3)}
    assert {(p["model"], p["perturbation"], p["level"]) for p in points} == {
        (m, n, lv) for m in CONFIGS for n, lvs in swept.items() for lv in lvs}
    for p in points:
        clean = saved["models"][p["model"]]
        assert p["clean_mAP"] == clean["mAP"] and 0 <= p["mAP"] <= 1 and 0 <= p["rank1"] <= 1
        if p["level"] == 0:                      # clean amount: the clean score exactly
            assert p["queries_unchanged"]
            assert (p["rank1"], p["mAP"]) == (clean["rank1"], clean["mAP"])
            assert p["mAP_retained"] == 1.0
        else:
            assert not p["queries_unchanged"]
        K = clean["num_parts"]
        if p["model"] == "R18":                  # global feature: no parts
            assert K is None and p["part_distances"] is None
        else:
            assert K == 6 and len(p["part_distances"]) == 6
    assert saved["protocol"]["num_query"] == 29 and saved["protocol"]["num_gallery"] == 51
    for name in ("robustness_shift.png", "robustness_occlusion_rect.png",
                 "part_distances_shift.png", "part_distances_occlusion_rect.png"):
        assert osp.getsize(tmp_path / name) > 1000, name
    md = open(tmp_path / "robustness.md").read()
    assert "shift +20%" in md and "occlusion_rect 30%" in md and "| Baseline |" in md
    assert md in capsys.readouterr().out
    assert res["points"] == points


def test_explain_writes_per_part_distances_of_a_pair(tiny_root, tmp_path, model_specs):
    rec = run_tool(tiny_root, tmp_path, model_specs[:1] + model_specs[2:], "--explain", "0", "3",
                   "--explain-perturbation", "occlusion_person=0.4")
    assert osp.getsize(tmp_path / "explain_q0_g3.png") > 1000
    saved = json.load(open(tmp_path / "explain_q0_g3.json"))
    assert list(saved["models"]) == ["MPN"] and saved["skipped"] == ["R18"]   # R18: no parts
    row = saved["models"]["MPN"]
    assert len(row["clean"]) == len(row["perturbed"]) == 6
    assert all(0 <= d <= 2 for d in row["clean"] + row["perturbed"])
    assert row["clean"] != row["perturbed"] and rec["query"]["index"] == 0


def test_matching_part_distances_equal_the_mean_over_matching_pairs():
    rng = np.random.default_rng(0)
    Q, G, K = 7, 15, 3
    qf, gf = torch.randn(Q, K * 4), torch.randn(G, K * 4)
    q_pids, g_pids = rng.integers(0, 3, Q), rng.integers(0, 4, G)
    q_cams, g_cams = rng.integers(0, 2, Q), rng.integers(0, 3, G)
    pairs = [(i, j) for i in range(Q) for j in range(G)
             if q_pids[i] == g_pids[j] and q_cams[i] != g_cams[j]]
    expected = np.mean([part_cosine_distances(qf[i:i + 1], gf[j:j + 1], K)[0].numpy()
                        for i, j in pairs], axis=0)
    got = matching_part_distances(qf, gf, q_pids, g_pids, q_cams, g_cams, K)
    assert np.allclose(got, expected, atol=1e-10)
    # part k of a pair = 1 - cos of the k-th slice of the concatenated feature
    q, g = qf[:1].view(K, 4), gf[:1].view(K, 4)
    assert np.allclose(part_cosine_distances(qf[:1], gf[:1], K)[0],
                       1 - torch.nn.functional.cosine_similarity(q, g, dim=1), atol=1e-6)
