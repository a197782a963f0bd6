"""tools/run_ablation.py: the frozen generator check, resumability (finished runs are not
retrained, shared rows are trained once) and the Markdown tables (mean ± std over seeds)."""
import json
import os

import pytest

import run_ablation


def fake_train(calls):
    def train(run, seed, args, data_root):
        calls.append((run.name, seed))
        path = run_ablation.result_path(args.log_dir, run, seed)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        rank1 = {"mpn": 0.40, "baseline": 0.30}.get(run.name, 0.2) + 0.01 * seed
        with open(path, "w") as f:
            json.dump({"wall_time_s": 120.0, "results": {"synthetic_pedestrians": {
                "rank1": rank1, "mAP": rank1 - 0.05}}}, f)
    return train


def test_resumable_and_tables(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_ablation, "train", fake_train(calls))
    monkeypatch.setattr(run_ablation, "prepare_data", lambda root, kind, py: str(tmp_path / kind))
    args = ["--log-dir", str(tmp_path / "log"), "--runs", "mpn", "baseline", "prior_full", "k6",
            "--groups", "table1", "table2", "fig7", "--seeds", "1", "2", "3",
            "--out", str(tmp_path / "abl.md")]
    table = run_ablation.main(args)
    # mpn x 3 seeds + baseline x 3; prior_full and k6 reuse mpn seed 1 (no extra training)
    assert sorted(calls) == sorted([("mpn", s) for s in (1, 2, 3)] + [("baseline", s) for s in (1, 2, 3)])
    assert "| MPN | 1,2,3 (of 3) | 42.0 ± 1.0 | 37.0 ± 1.0 | 2.0 |" in table
    assert "| Baseline | 1,2,3 (of 3) | 32.0 ± 1.0 |" in table
    assert "| mask + ROI resize (MPN) | 1 (of 1) | 41.0 | 36.0 |" in table
    assert "0ebb8f811a50693f" in table and "frozen: yes" in table
    assert (tmp_path / "abl.md").read_text().startswith("# Ablations")
    calls.clear()
    run_ablation.main(args)                          # everything done: nothing retrained
    assert calls == []


def test_changed_generator_is_refused(monkeypatch):
    monkeypatch.setattr(run_ablation, "FROZEN_SOURCE_SHA256", "0000000000000000")
    with pytest.raises(SystemExit, match="synthetic generator changed"):
        run_ablation.main(["--report-only"])
    assert "frozen: NO" in run_ablation.main(["--report-only", "--allow-unfrozen", "--groups", "fig7"])
