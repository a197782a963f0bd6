"""mpn_plugin.experiments.ablation (tools/run_ablation.py): the frozen generator check,
resumability (finished runs are not retrained, shared rows are trained once) and the Markdown
tables (mean ± std over seeds)."""
import json
import os

import pytest

from fake_training import fake_training_subprocess
from mpn_plugin.experiments import ablation as run_ablation


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


def fake_subprocess(tmp_path, monkeypatch):
    """Replace the tool's training subprocess: record the command, write its results.json."""
    def write(cmd, save_dir):
        with open(os.path.join(save_dir, "results.json"), "w") as f:
            json.dump({"wall_time_s": 60.0, "results": {"s": {"rank1": 0.5, "mAP": 0.4}}}, f)

    monkeypatch.setattr(run_ablation, "prepare_data",
                        lambda root, kind, py: run_ablation.data_root_of(root, kind))
    return fake_training_subprocess(monkeypatch, write)


def test_resumable_and_tables(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(run_ablation, "train", fake_train(calls))
    monkeypatch.setattr(run_ablation, "prepare_data", lambda root, kind, py: str(tmp_path / kind))
    args = ["--log-dir", str(tmp_path / "log"), "--runs", "mpn", "baseline", "prior_full", "k6",
            "--groups", "table1", "table2", "fig7", "--seeds", "1", "2", "3",
            "--out", str(tmp_path / "abl.md")]
    table = run_ablation.main(args)
    # mpn x 3 seeds + baseline x 3; prior_full and k6 reuse mpn seed 1 (no extra training)
    assert sorted(calls) == sorted([("mpn", s) for s in (1, 2, 3)]
                                   + [("baseline", s) for s in (1, 2, 3)])
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
    assert "frozen: NO" in run_ablation.main(["--report-only", "--allow-unfrozen",
                                              "--groups", "fig7"])


def test_ide_protocol_trains_stage_one_per_seed_and_passes_it(tmp_path, monkeypatch):
    """--ide-epochs: one IDE training per seed before that seed's MPN-family runs, whose
    command gets its checkpoint as mpn.init_weights; torchreid's models are untouched (no
    init, results in the plain log dir); the IDE row is reported."""
    cmds = fake_subprocess(tmp_path, monkeypatch)
    log = str(tmp_path / "log")
    table = run_ablation.main(["--log-dir", log, "--runs", "baseline", "mpn", "pcb_p6",
                               "--groups", "table1", "--seeds", "1", "2", "--ide-epochs", "3"])
    names = [(c[c.index("--config-file") + 1], c[c.index("train.seed") + 1]) for c in cmds]
    ide = "configs/ide_synthetic.yaml"
    assert names.count((ide, "1")) == 1 and names.count((ide, "2")) == 1
    assert names.index((ide, "1")) < names.index(("configs/ablation/baseline.yaml", "1"))
    assert names.index((ide, "2")) < names.index(("configs/ablation/baseline.yaml", "2"))
    for c in cmds:
        cfg, seed = c[c.index("--config-file") + 1], c[c.index("train.seed") + 1]
        if cfg.startswith("configs/ablation/"):
            want = os.path.join(f"{log}_ide3", "ide", f"seed{seed}", "model", "model.pth.tar-3")
            assert c[c.index("mpn.init_weights") + 1] == want
            assert c[c.index("data.save_dir") + 1].startswith(f"{log}_ide3")
        else:
            assert "mpn.init_weights" not in c
        if cfg == ide:
            assert c[c.index("train.max_epoch") + 1] == "3"
    assert os.path.isfile(os.path.join(log, "pcb_p6", "seed1", "results.json"))
    assert "| IDE (torchreid resnet18, softmax)" in table and "two-stage protocol" in table
    cmds.clear()
    run_ablation.main(["--log-dir", log, "--runs", "baseline", "mpn", "pcb_p6", "--groups",
                       "table1", "--seeds", "1", "2", "--ide-epochs", "3"])
    assert cmds == []                                   # resumable, IDE included


def test_ide_protocol_upper_bound_gets_an_error_free_ide(tmp_path, monkeypatch):
    """Baseline (UB) trains on error-free boxes end to end: its stage 1 too."""
    cmds = fake_subprocess(tmp_path, monkeypatch)
    log = str(tmp_path / "log")
    table = run_ablation.main(["--log-dir", log, "--runs", "baseline_ub", "--groups", "table1",
                               "--seeds", "1", "--ide-epochs", "2", "--root", str(tmp_path)])
    ide, ub = cmds
    assert ide[ide.index("--root") + 1] == ub[ub.index("--root") + 1] == str(
        tmp_path / "error_free")
    assert ub[ub.index("mpn.init_weights") + 1] == os.path.join(
        f"{log}_ide2", "ide_error_free", "seed1", "model", "model.pth.tar-2")
    assert "| IDE on error-free boxes" in table


def test_finished_runs_of_another_training_are_refused_not_reused(tmp_path, monkeypatch, capsys):
    """A --log-dir holding a run of another schedule (--epochs) must not pass its result off
    as this command's: training refuses before anything runs, --report-only warns; the same
    training spelt as the config's own value is reused."""
    cmds = fake_subprocess(tmp_path, monkeypatch)
    base = ["--log-dir", str(tmp_path / "log"), "--runs", "k1", "--groups", "fig7",
            "--root", str(tmp_path / "data")]
    run_ablation.main([*base, "--epochs", "2"])
    assert len(cmds) == 1
    refused = "(?s)k1/seed1: started with .*max_epoch 2.*another --log-dir"
    with pytest.raises(ValueError, match=refused):
        run_ablation.main([*base, "--epochs", "3"])
    assert len(cmds) == 1
    table = run_ablation.main([*base, "--epochs", "3", "--report-only"])
    assert "warning" in capsys.readouterr().out and "| 1 (of 1) |" in table
    run_ablation.main([*base, "--epochs", "2"])
    assert len(cmds) == 1                                            # same training: reused


def test_mpn_experiments_ablation_is_the_tool(tmp_path, monkeypatch):
    """``mpn-experiments ablation`` takes the tool's options and gives its tables."""
    from mpn_plugin.experiments import main
    fake_subprocess(tmp_path, monkeypatch)
    args = ["--log-dir", str(tmp_path / "log"), "--runs", "k1", "--groups", "fig7"]
    assert main(["ablation", *args]) == run_ablation.main(["--report-only", *args])
