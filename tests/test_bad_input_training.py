"""Bad input on the training side (issue 19): nothing hangs, nothing is lost, nothing wrong is
silent. Each case gives a clear error naming the file or field and the fix, or a reported
skip; what already held (resume, weights-only loading, NaN names the term) keeps holding."""
import json
import multiprocessing
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.build import build_datamanager
from mpn_plugin.config import get_default_config, merge_config_file
from mpn_plugin.engine import EngineMixin, LossDivergenceCheck, LossDivergenceError
from mpn_plugin.train import build_parser, main, setup_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FAST = ["data.height", "64", "data.width", "32", "data.workers", "0", "train.batch_size", "32",
        "sampler.num_instances", "4", "test.batch_size", "64", "train.print_freq", "100",
        "mpn.backbone", "resnet18", "mpn.dim", "64", "train.lr", "0.03", "train.warmup_epochs", "0"]


def run(root, save_dir, *opts):
    return main(["--config-file", "configs/mpn_synthetic.yaml", "--root", str(root), *FAST,
                 "data.save_dir", str(save_dir), *opts])


def copy_root(tiny_root, dest):
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"),
                    osp.join(str(dest), "synthetic_pedestrians"))
    return str(dest)


def first_image(root, split):
    folder = osp.join(root, "synthetic_pedestrians", split)
    return osp.join(folder, sorted(os.listdir(folder))[0])


def truncate(path):
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])


def make_empty(path):
    open(path, "wb").close()


def make_non_image(path):
    open(path, "w").write("this is not a JPEG\n")


# ------------------------------------------------------------------------------ corrupt images
@pytest.mark.parametrize("damage", [truncate, make_empty, make_non_image])
def test_unreadable_image_raises_at_the_first_read_naming_the_file(tiny_root, tmp_path, damage):
    path = str(tmp_path / "bad.jpg")
    shutil.copy(first_image(tiny_root, "query"), path)
    damage(path)
    with pytest.raises(compat.UnreadableImageError, match="bad.jpg.*data.corrupt_images skip"):
        compat.read_image(path)


# Runs tools/train.py's main() in a fresh process under a timeout: torchreid's read_image
# retries an unreadable file forever, so a regression must fail the test, not hang CI.
CORRUPT_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys
    from mpn_plugin import compat
    from mpn_plugin.train import main
    fast, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = {}
    for name, (root, save_dir, opts) in cases.items():
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                res = main(["--config-file", "configs/mpn_synthetic.yaml", "--root", root, *fast,
                            "data.save_dir", save_dir, *opts])
            out[name] = {"error": None, "skipped": res["skipped_images"],
                         "results": res["results"]}
        except compat.UnreadableImageError as exc:
            out[name] = {"error": str(exc)}
        out[name]["started_training"] = "=> Start training" in log.getvalue()
    print("RESULT" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def corrupt_runs(tiny_root, tmp_path_factory):
    """Copies of the tiny set with one damaged image each, run in ONE fresh process (under a
    timeout) through main(): error with 0 and 2 workers, and data.corrupt_images skip."""
    tmp = tmp_path_factory.mktemp("corrupt")
    cases, bad = {}, {}
    for name, damages, opts in (
            ("train_truncated", [("bounding_box_train", truncate)], ["data.workers", "0"]),
            ("query_empty", [("query", make_empty)], ["data.workers", "2"]),
            ("train_not_image", [("bounding_box_train", make_non_image)], ["data.workers", "2"]),
            # test-only: every query/gallery image is read, so the corrupt one must be left out
            ("skip", [("query", make_empty), ("bounding_box_train", truncate)],
             ["data.workers", "2", "data.corrupt_images", "skip", "test.evaluate", "True"])):
        root = copy_root(tiny_root, tmp / name)
        bad[name] = []
        for split, damage in damages:
            bad[name].append(first_image(root, split))
            damage(bad[name][-1])
        cases[name] = (root, str(tmp / f"log_{name}"), opts + ["train.max_epoch", "1"])
    proc = subprocess.run([sys.executable, "-c", CORRUPT_DRIVER, json.dumps(FAST),
                           json.dumps(cases)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    return {name: dict(out[name], bad=bad[name], save_dir=cases[name][1]) for name in cases}


@pytest.mark.parametrize("case", ["train_truncated", "query_empty", "train_not_image"])
def test_corrupt_train_or_query_image_is_an_error_before_training_with_0_and_2_workers(
        corrupt_runs, case):
    out = corrupt_runs[case]
    bad = out["bad"][0]
    assert out["error"] and bad in out["error"], out
    assert "data.corrupt_images skip" in out["error"]
    assert not out["started_training"]
    listed = open(osp.join(out["save_dir"], "unreadable_images.txt")).read()
    assert listed.startswith(bad + "\t")


def test_corrupt_images_are_skipped_and_reported_with_data_corrupt_images_skip(corrupt_runs):
    out = corrupt_runs["skip"]
    assert out["error"] is None and out["results"]["synthetic_pedestrians"]["mAP"] > 0
    assert sorted(out["skipped"]) == sorted(out["bad"])
    listed = [line.split("\t")[0] for line in open(osp.join(out["save_dir"],
                                                             "skipped_images.txt"))]
    assert sorted(listed) == sorted(out["bad"])


def test_skipped_images_leave_the_lists_and_identities_are_relabelled(tiny_root):
    cfg = setup_cfg(build_parser().parse_args(
        ["--config-file", "configs/mpn_synthetic.yaml", "--root", tiny_root, *FAST]))
    full = build_datamanager(cfg, use_gpu=False)
    train = full.train_loader.dataset.train
    lost_identity = [item[0] for item in train if item[1] == 0]      # every image of pid 0
    query = full.test_loader["synthetic_pedestrians"]["query"].dataset.query[0][0]
    dm = build_datamanager(cfg, use_gpu=False, excluded_images=lost_identity + [query])
    kept = dm.train_loader.dataset.train
    assert len(kept) == len(train) - len(lost_identity)
    assert sorted({item[1] for item in kept}) == list(range(full.num_train_pids - 1))
    assert dm.num_train_pids == full.num_train_pids - 1
    queries = dm.test_loader["synthetic_pedestrians"]["query"].dataset.query
    assert query not in [q[0] for q in queries]
    # the registrations are restored: the next build sees every image again
    assert len(build_datamanager(cfg, use_gpu=False).train_loader.dataset.train) == len(train)


# ------------------------------------------------------------------------------ checkpoints
def small_state(value=1.0):
    return {"state_dict": {"w": torch.full((1000,), value)}, "epoch": 1, "rank1": 0.5}


def write_and_get_killed(save_dir):
    """A checkpoint writer killed (SIGKILL) when half of the new file is on disk."""
    real_save = torch.save

    def save_then_die(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_then_die
    compat.save_checkpoint(small_state(2.0), save_dir)


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = compat.save_checkpoint(small_state(1.0), str(tmp_path))
    writer = multiprocessing.get_context("fork").Process(target=write_and_get_killed,
                                                          args=(str(tmp_path),))
    writer.start()
    writer.join(60)
    hung = writer.is_alive()
    if hung:                       # our own kill would also give -SIGKILL: tell them apart
        writer.kill()
        writer.join()
    assert not hung, "the checkpoint writer neither finished nor died within 60 s"
    assert writer.exitcode == -signal.SIGKILL   # it died by its own SIGKILL, mid-write
    # the half-written temporary is on disk beside the untouched checkpoint
    assert any(n.endswith(".tmp") for n in os.listdir(tmp_path)), os.listdir(tmp_path)
    assert torch.equal(compat.load_checkpoint(path)["state_dict"]["w"], torch.full((1000,), 1.0))
    # the next save replaces it (a stale temporary file does not get in the way)
    compat.save_checkpoint(small_state(3.0), str(tmp_path))
    assert compat.load_checkpoint(path)["state_dict"]["w"][0] == 3.0


def test_a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary(tmp_path,
                                                                              monkeypatch):
    path = compat.save_checkpoint(small_state(1.0), str(tmp_path))

    def fail_half_way(obj, f, *args, **kwargs):
        open(f, "wb").write(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", fail_half_way)
    with pytest.raises(KeyboardInterrupt):
        compat.save_checkpoint(small_state(2.0), str(tmp_path))
    assert os.listdir(tmp_path) == ["model.pth.tar-1"]
    assert compat.load_checkpoint(path)["state_dict"]["w"][0] == 1.0


def truncated_checkpoint(tmp_path, model):
    path = compat.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1}, str(tmp_path))
    truncate(path)
    return path


def test_truncated_checkpoint_is_named_for_resume_load_weights_and_init_weights(tmp_path):
    from mpn_plugin.models import build_mpn
    model = build_mpn(5, backbone="resnet18", dim=16)
    path = truncated_checkpoint(tmp_path, model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loads = {"model.resume": lambda: compat.resume_from_checkpoint(path, model, optimizer),
             "model.load_weights": lambda: compat.load_model_weights(model, path),
             "mpn.init_weights": lambda: model.init_weights(path)}
    for name, load in loads.items():
        with pytest.raises(compat.DamagedCheckpointError,
                           match=r"(?s)model\.pth\.tar-1.*damaged or truncated.*"
                                 r"another checkpoint"):
            load()
    make_empty(path)                                      # a zero-byte file (EOFError before)
    with pytest.raises(compat.DamagedCheckpointError, match="0 bytes"):
        compat.resume_from_checkpoint(path, model, optimizer)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_payload_checkpoint_is_refused_for_safety_without_suggesting_weights_only_false(
        tmp_path):
    from mpn_plugin.models import build_mpn
    path = str(tmp_path / "payload.pth")
    torch.save({"state_dict": {}, "epoch": 1, "extra": Payload()}, path)
    model = build_mpn(5, backbone="resnet18", dim=16)
    for load in (lambda: compat.load_checkpoint(path), lambda: model.init_weights(path),
                 lambda: compat.load_model_weights(model, path)):
        with pytest.raises(compat.UnsafeCheckpointError) as info:
            load()
        text = str(info.value)
        assert "payload.pth" in text and "refused for safety" in text
        assert "posix.system" in text                 # the refused global is named
        # torch's advice (re-run with weights_only=False) is neither repeated nor chained
        assert "weights_only" not in text and info.value.__suppress_context__


# ------------------------------------------------------------------------------ sampler
def test_more_identities_per_batch_than_the_training_set_names_the_numbers_and_fix(tiny_root,
                                                                                  tmp_path):
    # 96 = 24 identities x 4 images; the tiny training set has 16 identities
    with pytest.raises(ValueError, match=r"train.batch_size=96 with sampler.num_instances=4 "
                                         r"asks for 24 identities.*only 16 identities.*"
                                         r"train.batch_size 64 or less.*num_instances 6"):
        run(tiny_root, tmp_path / "x", "train.batch_size", "96", "train.max_epoch", "1")


# ------------------------------------------------------------------------------ divergence
def test_divergence_check_names_the_largest_term():
    check = LossDivergenceCheck(factor=1000)
    check({"loss_id_mt": 2.8, "loss_tri": 0.2, "acc": 10.0})        # the reference: 3.0
    check({"loss_id_mt": 2000.0, "loss_tri": 0.3, "acc": 0.0})      # 667x: still below
    with pytest.raises(LossDivergenceError,
                       match=r"loss_id_mt = 1.2e\+10.*train.divergence_factor"):
        check({"loss_id_mt": 1.2e10, "loss_tri": 0.3, "acc": 0.0}, context="epoch 1, batch 3")
    with pytest.raises(FloatingPointError, match="loss_tri=nan"):
        check({"loss_id_mt": 1.0, "loss_tri": float("nan")})
    off = LossDivergenceCheck(factor=0)                               # 0 = non-finite only
    off({"loss": 0.01})
    off({"loss": 1e12})
    small = LossDivergenceCheck(factor=100)                           # start 0.001: floor 1
    small({"loss_t": 0.001})
    small({"loss_t": 50.0})


def test_divergent_run_stops_naming_the_term_and_keeps_the_good_checkpoint(tiny_root, tmp_path):
    save_dir = tmp_path / "run"
    good = compat.save_checkpoint(small_state(1.0), str(save_dir / "model"))
    before = open(good, "rb").read()
    with pytest.raises(FloatingPointError,
                       match=r"(diverged|non-finite).*loss_(id_mt|id_at|tri|cf)"):
        run(tiny_root, save_dir, "train.lr", "1e6", "train.max_epoch", "1")
    assert open(good, "rb").read() == before
    assert os.listdir(save_dir / "model") == ["model.pth.tar-1"]


@pytest.mark.parametrize("lr", ["1e6", "1e30"])
def test_divergent_run_with_one_batch_per_epoch_is_caught_before_its_checkpoint(tiny_root,
                                                                                tmp_path, lr):
    """One batch per epoch: no second batch's loss to compare with, so the weights after the
    epoch's last step are checked (issue 30: max |w| 5e5 / 5e29 was saved with exit 0)."""
    save_dir = tmp_path / "run"
    good = compat.save_checkpoint(small_state(1.0), str(save_dir / "model"))
    before = open(good, "rb").read()
    one_batch = ["train.batch_size", "128", "sampler.num_instances", "8", "train.max_epoch", "1",
                 "train.lr", lr]
    shown_lr = re.escape(f"{float(lr):.3g}")
    with pytest.raises(FloatingPointError, match=rf"diverged after epoch 1 \(last step's lr "
                                                 rf"{shown_lr}\): the weights' L2 norm is "
                                                 r"[0-9.e+]+, more than train\.divergence"):
        run(tiny_root, save_dir, *one_batch)
    assert open(good, "rb").read() == before                  # the good checkpoint is kept
    assert os.listdir(save_dir / "model") == ["model.pth.tar-1"]


def test_weight_check_passes_a_sane_run_and_names_the_parameter_that_blew_up():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    check = LossDivergenceCheck(factor=1000)
    check.weights_start(model)
    with torch.no_grad():
        model[0].weight.mul_(3.0)                    # an ordinary change of scale: passes
    check.check_weights(model, context="after epoch 1")
    with torch.no_grad():
        model[2].weight[1, 3] = 5e5
    with pytest.raises(LossDivergenceError,
                       match=r"after epoch 2.*largest \|w\| 5e\+05 in 2\.weight"):
        check.check_weights(model, context="after epoch 2")
    with torch.no_grad():
        model[2].weight[1, 3] = float("inf")
    with pytest.raises(FloatingPointError, match=r"non-finite.*2\.weight"):
        check.check_weights(model, context="after epoch 3")
    off = LossDivergenceCheck(factor=0)              # 0: non-finite weights only
    off.weights_start(model[:2])
    with torch.no_grad():
        model[0].weight.mul_(1e6)
    off.check_weights(model[:2])


# ------------------------------------------------------------------------------ config / CLI
def test_input_smaller_than_the_backbone_stride_is_rejected_in_config_validation():
    args = build_parser().parse_args(["--config-file", "configs/mpn_synthetic.yaml",
                                      "data.height", "8", "data.width", "8"])
    with pytest.raises(ValueError, match=r"data.height=8 x data.width=8.*at least 16"):
        setup_cfg(args)


def test_opts_after_targets_are_rejected_as_unregistered_dataset_names():
    args = build_parser().parse_args(["--config-file", "configs/mpn_synthetic.yaml", "-t",
                                      "synthetic_pedestrians", "train.max_epoch", "1"])
    with pytest.raises(ValueError, match=r"(?s)data.targets.*\['train.max_epoch', '1'\].*--"):
        setup_cfg(args)
    with pytest.raises(ValueError, match="not registered: \\['market1051'\\]"):
        setup_cfg(build_parser().parse_args(["-s", "market1051"]))
    # the fix the message gives: '--' ends the dataset list
    cfg = setup_cfg(build_parser().parse_args(["--config-file", "configs/mpn_synthetic.yaml",
                                               "-t", "synthetic_pedestrians", "--",
                                               "train.max_epoch", "1"]))
    assert cfg.data.targets == ["synthetic_pedestrians"] and cfg.train.max_epoch == 1


# ------------------------------------------------------------------------------ demo checkpoints
def test_demo_config_saves_each_epoch_and_keeps_the_last_ones():
    demo, base = get_default_config(), get_default_config()
    merge_config_file(demo, osp.join(ROOT, "configs/mpn_synthetic_mobilenetv2.yaml"))
    merge_config_file(base, osp.join(ROOT, "configs/mpn_synthetic.yaml"))
    assert demo.train.checkpoint_freq == 1 and demo.train.keep_last >= 1
    assert demo.test.eval_freq == -1                     # evaluation only at the end
    assert (demo.train.lr, demo.train.max_epoch, demo.train.lr_scheduler) == (
        base.train.lr, base.train.max_epoch, base.train.lr_scheduler)


def test_an_interrupted_run_resumes_from_its_periodic_checkpoint(tiny_root, tmp_path,
                                                                 monkeypatch):
    real_train = compat.engine.Engine.train

    def interrupted_in_epoch_2(self, *args, **kwargs):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(compat.engine.Engine, "train", interrupted_in_epoch_2)
    opts = ["train.max_epoch", "2", "train.checkpoint_freq", "1", "train.batch_size", "64"]
    with pytest.raises(KeyboardInterrupt):
        run(tiny_root, tmp_path / "a", *opts)
    assert os.listdir(tmp_path / "a" / "model") == ["model.pth.tar-1"]
    monkeypatch.setattr(compat.engine.Engine, "train", real_train)
    out = run(tiny_root, tmp_path / "b", *opts, "model.resume",
              str(tmp_path / "a" / "model" / "model.pth.tar-1"))
    assert out["results"]["synthetic_pedestrians"]["epoch"] == 2
    assert len(out["loss_history"]) == 1                                 # epoch 2 only
    assert os.listdir(tmp_path / "b" / "model") == ["model.pth.tar-2"]


class CheckpointingEngine(EngineMixin):
    """The checkpoint side of an engine, without data: one small model."""

    def __init__(self, **attrs):
        self._models = {"model": torch.nn.Linear(2, 2)}
        self._optims, self._scheds = {"model": None}, {"model": None}
        self.__dict__.update(attrs)

    def get_model_names(self):
        return ["model"]


def test_periodic_checkpoints_skip_evaluation_epochs_and_keep_only_the_runs_last(tmp_path):
    foreign = compat.save_checkpoint(small_state(), str(tmp_path / "model"),
                                     filename="model.pth.tar-0")
    engine = CheckpointingEngine(checkpoint_freq=2, keep_last=2, _run_args={
        "save_dir": str(tmp_path), "max_epoch": 10, "eval_freq": 3, "start_eval": 0})
    for engine.epoch in range(10):
        engine.save_periodic_checkpoint()
    # every 2nd epoch, except 6 (torchreid saves after its evaluation) and 10 (the final save)
    assert sorted(os.listdir(tmp_path / "model")) == ["model.pth.tar-0", "model.pth.tar-4",
                                                      "model.pth.tar-8"]
    assert osp.isfile(foreign)                       # a file this run did not write stays
