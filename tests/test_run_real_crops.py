"""tools/run_real_crops.py: run plan of the two protocols (the IDE stage first and counted in
the two-stage runs' budget), resumability, the JSON records and the table."""
import json
import os

import pytest

import run_real_crops
from fake_training import fake_training_subprocess


def fake_subprocess(monkeypatch, results):
    """Replace the training subprocess: record the command, write results.json."""
    def write(cmd, save_dir):
        epochs = int(cmd[cmd.index("train.max_epoch") + 1]) if "train.max_epoch" in cmd else 5
        rank1, mAP = results[save_dir.split(os.sep)[-2]]
        seed = int(cmd[cmd.index("train.seed") + 1])
        with open(os.path.join(save_dir, "results.json"), "w") as f:
            json.dump({"wall_time_s": 60.0 * epochs, "loss_history": [{}] * epochs,
                       "results": {"custom_crops_prior": {"rank1": rank1 + 0.01 * seed,
                                                          "mAP": mAP + 0.01 * seed}}}, f)

    return fake_training_subprocess(monkeypatch, run_real_crops, write)


def test_plan_records_and_resume(tmp_path, monkeypatch):
    cmds = fake_subprocess(monkeypatch, {"softmax": (0.5, 0.5), "ide": (0.4, 0.4),
                                         "baseline": (0.6, 0.6), "mpn": (0.7, 0.7)})
    out, md = tmp_path / "runs.json", tmp_path / "t.md"
    args = ["--log-dir", str(tmp_path / "log"), "--seeds", "1", "2", "--ide-epochs", "2",
            "--two-stage-epochs", "baseline=3", "mpn=1", "--out", str(out), "--table", str(md)]
    run_real_crops.main(args)
    saved = [c[c.index("data.save_dir") + 1].split(os.sep)[-3:] for c in cmds]
    # per seed: stage 1 (IDE) first, then softmax (once), baseline and mpn under both protocols
    assert saved[:6] == [["two_stage", "ide", "seed1"], ["imagenet", "softmax", "seed1"],
                         ["imagenet", "baseline", "seed1"], ["two_stage", "baseline", "seed1"],
                         ["imagenet", "mpn", "seed1"], ["two_stage", "mpn", "seed1"]]
    assert len(cmds) == 12
    two_stage_mpn = cmds[5]
    init = two_stage_mpn[two_stage_mpn.index("mpn.init_weights") + 1]
    assert init.endswith(os.path.join("two_stage", "ide", "seed1", "model", "model.pth.tar-2"))
    assert two_stage_mpn[two_stage_mpn.index("train.max_epoch") + 1] == "1"
    rows = json.loads(out.read_text())
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(
        ["dataset", "model", "protocol", "seed", "rank1", "mAP", "epochs", "wall_s", "command"]))}
    assert len(rows) == 10                              # the IDE stage is not a row of its own
    ts = next(r for r in rows if r["protocol"] == "two_stage" and r["model"] == "mpn"
              and r["seed"] == 2)
    assert ts["epochs"] == 3 and ts["wall_s"] == 180.0   # 2 IDE epochs + 1 MPN epoch
    assert ts["rank1"] == 72.0 and " && " in ts["command"]
    assert "| two_stage | mpn | 1,2 | 71.5 ± 0.7 | 71.5 ± 0.7 | 3 | 3.0 |" in md.read_text()
    cmds.clear()
    run_real_crops.main(args)                           # all finished: nothing retrained
    assert cmds == []


def test_baseline_plain_is_opt_in_and_uses_its_own_config(tmp_path, monkeypatch):
    cmds = fake_subprocess(monkeypatch, {"baseline_plain": (0.8, 0.8)})
    rows = run_real_crops.main(["--log-dir", str(tmp_path / "log"), "--seeds", "1",
                                "--protocols", "imagenet", "--models", "baseline_plain"])
    assert len(cmds) == 1 and cmds[0][cmds[0].index("--config-file") + 1].endswith(
        "baseline_plain_mobilenetv2.yaml")
    assert [(r["model"], r["protocol"]) for r in rows] == [("baseline_plain", "imagenet")]
    assert "baseline_plain" not in run_real_crops.DEFAULT_MODELS


def test_out_keeps_the_rows_of_other_runs_and_replaces_re_measured_ones(tmp_path, monkeypatch):
    fake_subprocess(monkeypatch, {"mpn": (0.7, 0.7)})
    out = tmp_path / "runs.json"
    other = {"dataset": "cuhk01", "model": "softmax", "protocol": "imagenet", "seed": 1,
             "rank1": 50.0, "mAP": 50.0, "epochs": 10, "wall_s": 1.0, "command": "x"}
    stale = dict(other, model="mpn", rank1=1.0, mAP=1.0)
    out.write_text(json.dumps([other, stale]))
    rows = run_real_crops.main(["--log-dir", str(tmp_path / "log"), "--seeds", "1", "2",
                                "--protocols", "imagenet", "--models", "mpn", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved == rows
    assert [(r["model"], r["seed"], r["mAP"]) for r in saved] == [
        ("softmax", 1, 50.0), ("mpn", 1, 71.0), ("mpn", 2, 72.0)]
    # --report-only with a log dir that has no runs keeps the file as it is
    assert run_real_crops.main(["--log-dir", str(tmp_path / "empty"), "--report-only",
                                "--out", str(out)]) == saved
    assert json.loads(out.read_text()) == saved


def test_out_that_is_not_a_list_of_runs_is_refused_and_left_untouched(tmp_path, monkeypatch):
    fake_subprocess(monkeypatch, {"mpn": (0.7, 0.7)})
    out = tmp_path / "runs.json"
    out.write_text('{"not": "a list"}')
    with pytest.raises(ValueError, match="runs.json.*left untouched"):
        run_real_crops.main(["--log-dir", str(tmp_path / "log"), "--seeds", "1",
                             "--protocols", "imagenet", "--models", "mpn", "--out", str(out)])
    assert out.read_text() == '{"not": "a list"}'
