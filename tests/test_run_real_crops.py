"""mpn_plugin.experiments.real_crops (tools/run_real_crops.py): run plan of the two protocols
(the IDE stage first and counted in the two-stage runs' budget), resumability, the JSON records
and the table."""
import glob
import json
import os

import pytest

from fake_training import fake_training_subprocess
from mpn_plugin.experiments import real_crops as run_real_crops


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

    return fake_training_subprocess(monkeypatch, write)


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


def test_paper_protocol_is_opt_in_and_uses_its_own_config(tmp_path, monkeypatch):
    cmds = fake_subprocess(monkeypatch, {"mpn_paper_protocol": (0.8, 0.8)})
    rows = run_real_crops.main(["--log-dir", str(tmp_path / "log"), "--seeds", "1",
                                "--protocols", "imagenet", "--models", "mpn_paper_protocol"])
    assert len(cmds) == 1 and cmds[0][cmds[0].index("--config-file") + 1].endswith(
        "mpn_paper_protocol.yaml")
    assert [(r["model"], r["protocol"]) for r in rows] == [("mpn_paper_protocol", "imagenet")]
    assert "mpn_paper_protocol" not in run_real_crops.DEFAULT_MODELS
    assert "baseline_plain" not in run_real_crops.MODELS          # one recipe per model


def test_table_keeps_rows_of_former_recipes_and_leaves_probe_rows_out():
    row = {"dataset": "cuhk01", "protocol": "imagenet", "seed": 1, "rank1": 80.0, "mAP": 84.0,
           "epochs": 9, "wall_s": 600.0, "command": "x"}
    rows = [dict(row, model="baseline_plain"), dict(row, model="mpn", mAP=75.0),
            dict(row, model="mpn_pool_avg", protocol="probe")]
    text = run_real_crops.table(rows)
    assert text.index("| imagenet | mpn |") < text.index("| imagenet | baseline_plain |")
    assert "mpn_pool_avg" not in text


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


def _write_probes(tmp_path, text):
    path = tmp_path / "probes.yaml"
    path.write_text(text)
    return str(path)


def fake_probe_subprocess(monkeypatch):
    """Fake runs whose results.json carries every readout (as test.extra_readouts writes)."""
    def write(cmd, save_dir):
        epochs = int(cmd[cmd.index("train.max_epoch") + 1]) if "train.max_epoch" in cmd else 5
        base = 0.5 + 0.1 * ("mpn.mt_pooling" in cmd)
        res = {"wall_time_s": 60.0 * epochs, "loss_history": [{}] * epochs,
               "results": {"custom_crops_prior": {"rank1": base, "mAP": base}}}
        if "test.extra_readouts" in cmd:
            res["readouts"] = {k: {"custom_crops_prior": {"rank1": base + d, "mAP": base + d}}
                               for k, d in (("mt", 0.0), ("at_uniform", 0.02), ("concat", 0.01))}
        with open(os.path.join(save_dir, "results.json"), "w") as f:
            json.dump(res, f)
    return fake_training_subprocess(monkeypatch, write)


def test_probes_run_in_order_share_the_ide_stage_resume_and_record_every_readout(
        tmp_path, monkeypatch):
    cmds = fake_probe_subprocess(monkeypatch)
    probes = _write_probes(tmp_path, """
- {name: mpn_pool_avg, model: mpn, opts: [mpn.mt_pooling, avg]}
- {name: paper, model: mpn_paper_protocol, ide: true}
- {name: paper_o, model: mpn_paper_protocol, ide: true, opts: [mpn.use_attention, "False"]}
""")
    out = tmp_path / "rows.json"
    args = ["--probes", probes, "--seeds", "1", "--log-dir", str(tmp_path / "log"),
            "--dataset", "jit", "--root", "data/jit", "--ide-epochs", "3", "--out", str(out)]
    rows = run_real_crops.main(args)
    names = [c[c.index("data.save_dir") + 1].split(os.sep)[-2] for c in cmds]
    assert names == ["ide", "mpn_pool_avg", "paper", "paper_o"]    # one IDE for both probes
    ide_ckpt = os.path.join(str(tmp_path / "log"), "probes", "jit", "ide", "seed1", "model",
                            "model.pth.tar-3")
    for cmd in cmds[2:]:
        assert cmd[cmd.index("mpn.init_weights") + 1] == ide_ckpt
        assert cmd[cmd.index("model.pretrained") + 1] == "False"
        assert cmd[cmd.index("--root") + 1] == "data/jit"
    assert cmds[1][-2:] == ["mpn.mt_pooling", "avg"]
    assert "test.extra_readouts" not in cmds[0]                     # the softmax IDE model
    by_name = {r["model"]: r for r in rows}
    assert set(by_name) == {"ide", "mpn_pool_avg", "paper", "paper_o"}
    assert by_name["mpn_pool_avg"]["readouts"]["at_uniform"]["mAP"] == 62.0
    assert by_name["mpn_pool_avg"]["mAP"] == 60.0 and "readouts" not in by_name["ide"]
    assert by_name["paper"]["epochs"] == 3 + 5 and " && " in by_name["paper"]["command"]
    assert json.loads(out.read_text()) == rows
    assert "| jit | mpn_pool_avg | 1 | 60.0 | 60.0 | 60.0 / 62.0 / 61.0 | 5 |" in \
        run_real_crops.probe_table(rows)
    cmds.clear()
    assert run_real_crops.main(args) == rows and cmds == []       # resumed: nothing retrained


def test_a_probe_that_trains_the_ide_is_the_ide_trained_once(tmp_path, monkeypatch):
    """The softmax model at --ide-epochs is the IDE stage (same resolved config): trained once
    per seed, both rows read from the IDE's folder; at other epochs it is its own run."""
    cmds = fake_probe_subprocess(monkeypatch)
    probes = _write_probes(tmp_path, """
- {name: paper, model: mpn_paper_protocol, ide: true}
- {name: softmax, model: softmax}
- {name: softmax_16ep, model: softmax, opts: [train.max_epoch, "16"]}
""")
    rows = run_real_crops.main(["--probes", probes, "--seeds", "1", "--log-dir",
                                str(tmp_path / "log"), "--dataset", "jit", "--root", "data/jit",
                                "--ide-epochs", "10"])
    names = [c[c.index("data.save_dir") + 1].split(os.sep)[-2] for c in cmds]
    assert names == ["ide", "paper", "softmax_16ep"]
    by_name = {r["model"]: r for r in rows}
    assert by_name["softmax"]["command"] == by_name["ide"]["command"]
    assert by_name["softmax"]["epochs"] == 10 and by_name["softmax_16ep"]["epochs"] == 16
    assert not os.path.exists(tmp_path / "log" / "probes" / "jit" / "softmax")


@pytest.mark.parametrize("text,match", [
    ("{name: a}", "expected a list"),
    ("- {model: mpn}", "needs a 'name'"),
    ("- {name: a}\n- {name: a}", "used twice"),
    ("- {name: a, model: pcb}", "model 'pcb'"),
    ("- {name: a, opts: [mpn.dim]}", "key, value pairs"),
    ("- {name: a, epochs: 3}", "unknown keys"),
])
def test_bad_probe_files_are_refused_with_the_entry_and_the_fix(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        run_real_crops.load_probes(_write_probes(tmp_path, text))


def test_mpn_experiments_real_crops_is_the_tool(tmp_path, monkeypatch):
    """``mpn-experiments real-crops`` takes the tool's options and gives its rows."""
    from mpn_plugin.experiments import main
    cmds = fake_subprocess(monkeypatch, {"mpn": (0.7, 0.7)})
    args = ["--log-dir", str(tmp_path / "log"), "--seeds", "1", "--protocols", "imagenet",
            "--models", "mpn"]
    rows = main(["real-crops", *args])
    assert len(cmds) == 1 and [(r["model"], r["mAP"]) for r in rows] == [("mpn", 71.0)]
    assert run_real_crops.main(["--report-only", *args]) == rows


def test_a_run_finished_meanwhile_is_not_retrained(tmp_path, capsys):
    """The to-do list is made at start; a run that another runner (or a linked run folder, the
    IDE stage shared with the softmax model) finishes meanwhile must not be trained again."""
    import json as _json

    from mpn_plugin.experiments.runner import PlannedRun, train_missing
    shared = tmp_path / "ide" / "seed1"
    runs = [PlannedRun("probe", "ide", 1, str(shared), ["train"], None),
            PlannedRun("probe", "softmax", 1, str(shared), ["train"], None)]
    started = []

    def start(run):
        started.append(run.name)
        shared.mkdir(parents=True, exist_ok=True)
        (shared / "results.json").write_text(_json.dumps(
            {"results": {"d": {"rank1": 0.5, "mAP": 0.4}}}))

    train_missing(runs, start)
    assert started == ["ide"]
    assert "softmax seed 1: finished meanwhile" in capsys.readouterr().out


def test_opts_reach_every_run_the_ide_stage_included_before_the_probes_own(tmp_path, monkeypatch):
    cmds = fake_probe_subprocess(monkeypatch)
    probes = _write_probes(tmp_path, """
- {name: paper, model: mpn_paper_protocol, ide: true, opts: [data.height, "384"]}
""")
    args = ["--probes", probes, "--seeds", "1", "--log-dir", str(tmp_path / "log"),
            "--opts", "data.height", "256", "data.width", "128"]
    run_real_crops.main(args)
    assert [c[c.index("data.save_dir") + 1].split(os.sep)[-2] for c in cmds] == ["ide", "paper"]
    for cmd in cmds:
        i = cmd.index("data.width")
        assert cmd[i - 2:i + 2] == ["data.height", "256", "data.width", "128"]
    paper = cmds[1]
    assert paper.index("384") > paper.index("128")      # the probe's own override comes last
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        run_real_crops.main([*args, "data.height"])


def test_finished_runs_of_another_command_are_refused_not_reused(tmp_path, monkeypatch, capsys):
    """A --log-dir holding runs of other overrides (here a shorter schedule) must not pass
    those results off as this command's: training refuses, --report-only warns."""
    cmds = fake_subprocess(monkeypatch, {"mpn": (0.7, 0.7)})
    base = ["--log-dir", str(tmp_path / "log"), "--seeds", "1", "--protocols", "imagenet",
            "--models", "mpn"]
    run_real_crops.main(base)
    assert len(cmds) == 1
    with pytest.raises(ValueError, match="another --log-dir.*nothing was trained"):
        run_real_crops.main([*base, "--opts", "train.max_epoch", "2"])
    assert len(cmds) == 1
    rows = run_real_crops.main([*base, "--opts", "train.max_epoch", "2", "--report-only"])
    assert "warning" in capsys.readouterr().out and len(rows) == 1
    run_real_crops.main([*base, "--opts", "train.max_epoch", "6"])   # the config's own value
    assert len(cmds) == 1                                            # same run: reused


def test_changed_runs_compare_the_resolved_config_not_the_spelling(tmp_path):
    from mpn_plugin.experiments.runner import PlannedRun, changed_runs, train_command
    run_dir = tmp_path / "softmax" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    config = "configs/cuhk01/softmax_mobilenetv2.yaml"           # max_epoch 10 in the file
    planned = PlannedRun("probe", "ide", 1, str(run_dir),
                         train_command(config, 1, str(run_dir), opts=["train.max_epoch", "10"]))

    def started(*opts, save_dir="log/elsewhere/softmax/seed1"):
        import shlex
        (run_dir / "command.txt").write_text(shlex.join(
            ["/other/python", *train_command(config, 1, save_dir, opts=list(opts))[1:]]))
        return changed_runs([planned])

    assert started() == []                                  # 10 from the file = 10 on the line
    assert started("train.max_epoch", "10") == []
    assert len(started("train.max_epoch", "9")) == 1
    assert len(started("train.lr", "0.1")) == 1


def test_rows_name_the_device_their_run_was_measured_on(tmp_path):
    from mpn_plugin.experiments.runner import PlannedRun, record
    run_dir = tmp_path / "mpn" / "seed1"
    run_dir.mkdir(parents=True)
    res = {"wall_time_s": 60.0, "loss_history": [{}], "device": "NVIDIA H200 (GPU)",
           "results": {"cuhk01": {"rank1": 0.5, "mAP": 0.4}}}
    (run_dir / "results.json").write_text(json.dumps(res))
    row, = record([PlannedRun("probe", "mpn", 1, str(run_dir), ["python", "tools/train.py"])],
                  "cuhk01")
    assert row["device"] == "NVIDIA H200 (GPU)" and row["mAP"] == 40.0


@pytest.mark.parametrize("path", sorted(
    glob.glob(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs", "probes", "*.yaml"))), ids=os.path.basename)
def test_every_shipped_probe_list_loads_and_each_run_has_a_valid_config(path, tmp_path):
    """A wrong key in a probe list would only fail hours into a sweep: every planned run's
    config (file, the stage-1 checkpoint options, the probe's overrides) must load here."""
    from mpn_plugin.build import load_config
    from mpn_plugin.experiments.runner import ROOT
    args = run_real_crops.build_parser().parse_args(
        ["--probes", path, "--seeds", "1", "--log-dir", str(tmp_path), "--ide-epochs", "10"])
    runs = run_real_crops.probe_plan(args, run_real_crops.load_probes(path))
    assert runs
    for run in runs:
        cmd = run.command
        config = os.path.join(ROOT, cmd[cmd.index("--config-file") + 1])
        opts = cmd[cmd.index("data.save_dir") + 2:]
        cfg = load_config(config, opts)                 # raises on a wrong key or value
        assert cfg.mpn.init_weights.endswith("model.pth.tar-10") == (run.stage1_dir is not None)


def test_baseline_paper_protocol_config_is_the_baseline_probe_of_the_paper_protocol():
    """configs/cuhk01/baseline_paper_protocol.yaml trains what the probe rows
    ``baseline_paper_protocol`` (mpn_paper_protocol.yaml + the Baseline's options) measured."""
    from mpn_plugin.build import load_config
    from mpn_plugin.experiments.runner import ROOT

    def resolved(name, opts=()):
        cfg = load_config(os.path.join(ROOT, "configs", "cuhk01", name), list(opts))
        cfg.defrost()
        cfg.data.save_dir = ""
        return cfg.dump()
    probe = ["mpn.tasks", "at_only", "mpn.prior_variant", "uniform", "mpn.use_attention",
             "False", "mpn.loss.alignment", "none"]
    assert resolved("baseline_paper_protocol.yaml") == resolved("mpn_paper_protocol.yaml", probe)
    assert resolved("baseline_paper_protocol.yaml") != resolved("mpn_paper_protocol.yaml")
    assert run_real_crops.MODELS["baseline_paper_protocol"] == "baseline_paper_protocol.yaml"
