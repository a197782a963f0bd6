"""Where the main tasks' GMP picks (mpn_plugin/evaluation/part_selectivity.py) against hand
counts, on a model whose heads are part-selective by construction, and tools/part_selectivity.py
end to end."""
import json

import pytest
import torch
import torch.nn as nn

from mpn_plugin.build import build_model
from mpn_plugin.cli import part_selectivity as tool
from mpn_plugin.evaluation.part_selectivity import (
    main_task_responses,
    part_selectivity,
    strip_counts,
    strip_of_rows,
    trunk_features,
)
from mpn_plugin.models import build_mpn
from mpn_plugin.train import build_parser, setup_cfg


def test_strip_of_rows_holds_each_row_centre():
    assert strip_of_rows(24, 6).tolist() == [k for k in range(6) for _ in range(4)]
    # H = 8, K = 6: row centres 0.5..7.5 times 6/8 -> 0.375, 1.125, 1.875, 2.625, ...
    assert strip_of_rows(8, 6).tolist() == [0, 1, 1, 2, 3, 4, 4, 5]
    assert strip_of_rows(3, 6).tolist() == [1, 3, 5]


def test_strip_counts_match_hand_counts_and_skip_all_zero_channels():
    # N=2 images, K=2 heads, D=2 channels, H=4 rows, W=2 columns;
    # strips: rows {0,1} -> 0, {2,3} -> 1
    r = torch.zeros(2, 2, 2, 4, 2)
    r[0, 0, 0, 0, 1] = 1.0     # head 0: max in row 0 -> strip 0
    r[0, 0, 1, 3, 0] = 2.0     # head 0: row 3 -> strip 1
    r[1, 0, 0, 1, 1] = 0.5     # head 0: row 1 -> strip 0
    # image 1, head 0, channel 1 stays all zero: no maximum, not counted
    r[0, 1, 0, 2, 0] = 1.0     # head 1: row 2 -> strip 1
    r[0, 1, 1, 2, 1] = 3.0     # head 1: row 2 -> strip 1
    r[1, 1, 0, 0, 0] = 1.0     # head 1: row 0 -> strip 0
    r[1, 1, 1, 3, 1] = 1.0     # head 1: row 3 -> strip 1
    assert strip_counts(r).tolist() == [[2, 1], [1, 3]]


class StubTrunk(nn.Module):
    """A trunk whose channel c fires at row ``rows[c]`` (column 0) whatever the image."""

    def __init__(self, rows, height, width):
        super().__init__()
        self.rows, self.height, self.width = rows, height, width

    def forward(self, x, attention=None):
        F = torch.zeros(x.shape[0], len(self.rows), self.height, self.width)
        for c, row in enumerate(self.rows):
            F[:, c, row, 0] = 1.0 + 0.1 * torch.arange(x.shape[0])
        return F


def selective_mpn(K=3, D=4, H=6, W=2, reverse=False):
    """MPN whose head k reads only trunk channel k, which fires in strip k (reversed: strip
    K-1-k), with identity test-time BNs: part-selective by construction."""
    model = build_mpn(5, backbone="resnet18", num_parts=K, dim=D).eval()
    rows = [(K - 1 - k if reverse else k) * (H // K) for k in range(K)]
    model.backbone = StubTrunk(rows, H, W)
    w = torch.zeros(K, D, K)
    for k in range(K):
        w[k, :, k] = 1.0
    first = model.main_heads.first
    first.conv.weight = nn.Parameter(w)
    first.conv.in_features = K
    first.bn.running_mean.zero_()
    first.bn.running_var.fill_(1.0)
    return model


def test_part_selective_heads_give_the_identity_matrix_and_spearman_one():
    images = torch.zeros(4, 3, 96, 32)
    rep = part_selectivity(selective_mpn(), [images[:2], images[2:]])
    assert torch.equal(rep["matrix"], torch.eye(3, dtype=torch.float64))
    assert rep["diagonal"] == 1.0 and rep["spearman"] == pytest.approx(1.0)
    assert rep["mean_strip"].tolist() == [0.0, 1.0, 2.0] and rep["span"] == 2.0
    assert rep["chance"].tolist() == pytest.approx([1 / 3] * 3)
    assert rep["chance_diagonal"] == pytest.approx(1 / 3)
    assert rep["feature_size"] == (6, 2) and rep["maxima"] == 4 * 3 * 4
    rev = part_selectivity(selective_mpn(reverse=True), [images])
    assert torch.equal(rev["matrix"], torch.eye(3, dtype=torch.float64).flip(1))
    assert rev["diagonal"] == pytest.approx(1 / 3) and rev["spearman"] == pytest.approx(-1.0)
    assert rev["span"] == 2.0


def test_responses_are_what_the_test_time_main_task_max_pools():
    torch.manual_seed(0)
    model = build_mpn(7, backbone="resnet18", num_parts=3, dim=16).eval()
    for m in model.modules():                  # non-trivial running statistics
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 64, 32)
    r = main_task_responses(model, x)                                   # (B, K, D, H, W)
    assert r.shape == (2, 3, 16, 4, 2) and not model.training
    with torch.no_grad():
        h = model.main_heads._vector_stage(r.flatten(3).amax(-1)).flatten(1)
        assert torch.allclose(h, model(x), atol=1e-5)
        assert torch.allclose(trunk_features(model, x), model.backbone(x).mean((2, 3)))


def test_a_model_without_main_tasks_is_refused():
    with pytest.raises(ValueError, match="Baseline"):
        main_task_responses(build_mpn(5, variant="mpn_baseline", backbone="resnet18", dim=8),
                            torch.zeros(1, 3, 64, 32))


FAST = ["data.height", "64", "data.width", "32", "mpn.backbone", "resnet18", "mpn.dim", "32",
        "test.batch_size", "64", "data.workers", "0"]


def test_tool_writes_table_json_and_figure(tiny_root, tmp_path):
    specs = []
    for name, config in {"MPN": "configs/mpn_synthetic.yaml",
                         "Baseline": "configs/ablation/baseline.yaml"}.items():
        cfg = setup_cfg(build_parser().parse_args(["--config-file", config, *FAST]))
        torch.manual_seed(0)
        path = str(tmp_path / f"{name}.pth.tar-1")
        torch.save({"state_dict": build_model(cfg, num_classes=16).state_dict(),
                    "epoch": 1}, path)
        specs += ["--model", f"{name}={config}:{path}"]
    rows = tool.main(["--root", tiny_root, "--num", "8", "--trunk", "--out-dir", str(tmp_path),
                      *specs, *FAST])
    mpn, base = rows
    assert len(mpn["matrix"]) == 6 and mpn["images"] == 8
    # the tool's matrix is the library's, for that checkpoint and the first 8 query images
    from mpn_plugin.build import load_model_spec
    from mpn_plugin.evaluation.robustness import ReidModel, load_split
    name, model, cfg = load_model_spec(specs[1], tiny_root, FAST)
    query, _ = load_split(cfg.data.targets[0], cfg.data.root)
    direct = part_selectivity(model, ReidModel(name, model, cfg).input_batches(query.paths[:8]))
    assert torch.allclose(torch.tensor(mpn["matrix"], dtype=torch.float64), direct["matrix"])
    assert mpn["diagonal"] == pytest.approx(direct["diagonal"])
    assert 0 < mpn["maxima"] == direct["maxima"] <= 8 * 6 * 32   # images x heads x channels
    assert "matrix" not in base and 0 <= base["trunk_mAP"] <= 1 and 0 <= base["mAP"] <= 1
    saved = json.load(open(tmp_path / "part_selectivity.json"))
    assert [r["model"] for r in saved] == ["MPN", "Baseline"]
    assert saved[0]["matrix"] == mpn["matrix"] and saved[1]["trunk_mAP"] == base["trunk_mAP"]
    text = (tmp_path / "part_selectivity.md").read_text()
    assert "no main task" in text and "MPN: share of head k's channel maxima" in text
    assert (tmp_path / "part_selectivity.png").stat().st_size > 0
