"""Multi-process training (torchrun, DDP on gloo): the distributed identity sampler, and two
processes training the tiny synthetic set end to end against a single process of the same
total batch."""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

from mpn_plugin.data.distributed_sampler import DistributedIdentitySampler

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def items(num_pids=20, per_pid=(2, 3, 5, 8)):
    out = []
    for pid in range(num_pids):
        out += [(f"{pid}_{k}.jpg", pid, k % 2) for k in range(per_pid[pid % len(per_pid)])]
    return out


def draw(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_sampler_disjoint_across_ranks_and_deterministic_per_epoch():
    data = items()                                    # 20 ids with 2, 3, 5 or 8 images
    S, A, world = 3, 4, 2
    samplers = [DistributedIdentitySampler(data, S * A, A, world, r, seed=7) for r in range(world)]
    for epoch in (0, 1):
        per_rank = [draw(s, epoch) for s in samplers]
        assert len({len(s) for s in samplers}) == 1 and len(samplers[0]) > 0  # same steps
        assert all(len(idx) == len(s) for idx, s in zip(per_rank, samplers))
        pids = [[data[i][1] for i in idx] for idx in per_rank]
        for p, idx in zip(pids, per_rank):
            for b in range(0, len(p), S * A):            # S identities x A images each
                batch = p[b:b + S * A]
                assert [batch[k * A] for k in range(S) for _ in range(A)] == batch
                assert len(set(batch)) == S
            for b in range(0, len(idx), A):              # no repeat unless the id has < A
                block = idx[b:b + A]
                if sum(d[1] == data[block[0]][1] for d in data) >= A:
                    assert len(set(block)) == A
        assert not set(pids[0]) & set(pids[1])          # ranks' identities disjoint in the epoch
        # an epoch covers most images (torchreid-style chunks), not one chunk per identity
        used = set(per_rank[0]) | set(per_rank[1])
        assert len(used) > 0.6 * len(data)
    again = DistributedIdentitySampler(data, S * A, A, world, 0, seed=7)
    assert draw(again, 1) == draw(samplers[0], 1)                 # same (seed, epoch): same draw
    assert draw(samplers[0], 0) != draw(samplers[0], 1)           # another epoch: another draw
    samplers[1].set_epoch(1)
    assert samplers[0].batches(1) == samplers[1].batches(1)       # every rank knows the plan


def test_sampler_bad_arguments():
    with pytest.raises(ValueError, match="multiple of num_instances"):
        DistributedIdentitySampler(items(), 10, 4, 2, 0)
    with pytest.raises(ValueError, match="cannot fill one step"):
        DistributedIdentitySampler(items(num_pids=4), 12, 4, 2, 0)
    with pytest.raises(ValueError, match="rank 2"):
        DistributedIdentitySampler(items(), 12, 4, 2, 2)


FAST = ["data.height", "64", "data.width", "32", "data.workers", "0", "mpn.dim", "64",
        "sampler.num_instances", "4", "train.max_epoch", "6", "train.print_freq", "1",
        "train.warmup_epochs", "0", "train.lr", "0.05", "test.batch_size", "64"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_root, tmp_path):
    """torchrun --nproc_per_node=2 trains (both ranks step), rank 0 alone writes the checkpoint
    and evaluates once, and the loss falls like a single process with the same total batch."""
    torchrun = shutil.which("torchrun", path=osp.dirname(sys.executable))
    assert torchrun, "torchrun is installed with torch"
    # both runs in subprocesses with one thread per process: the comparison below is not one
    # of thread counts (or of float summation orders that come with them)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    train = [osp.join(ROOT, "tools", "train.py"), "--config-file",
             osp.join(ROOT, "configs", "mpn_synthetic.yaml"), "--root", tiny_root, *FAST]
    # --standalone: torchrun's own rendezvous binds a free port itself (no port picked here
    # and released, which another process could take before torchrun binds it)
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", *train, "train.batch_size", "8",
           "data.save_dir", str(ddp_dir)]
    # the timeout only guards against a hang (a gloo peer that never connects): the run takes
    # ~1-2 min on 2 loaded cores
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [p for p in os.listdir(ddp_dir) if p.startswith("train.log")]
    assert len(logs) == 1                                         # rank 0 logs, alone
    log = open(ddp_dir / logs[0]).read()
    assert "DistributedDataParallel: 2 processes (gloo)" in log
    assert log.count("** Results **") == 1                        # evaluation ran once
    assert sorted(os.listdir(ddp_dir / "model")) == ["model.pth.tar-6"]
    ddp = json.load(open(ddp_dir / "results.json"))
    assert ddp["world_size"] == 2 and len(ddp["loss_history"]) == 6
    # 16 train ids x 8 images: 8 ids x 2 chunks of 4 per rank -> 8 steps of 2 ids, as the
    # single process's 8 steps of 4 ids (both ranks step: every step all-reduces)
    steps = int(re.search(r"(\d+) steps per epoch", log).group(1))
    assert 6 <= steps <= 8                    # up to 8, less when a rank's last ids pair up

    proc = subprocess.run([sys.executable, *train, "train.batch_size", "16", "data.save_dir",
                           str(single_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.load(open(single_dir / "results.json"))
    assert single["world_size"] == 1

    def fall(history):
        """mean total loss of the last two epochs / that of the first (1 = no progress)"""
        t = [sum(v for k, v in e.items() if k.startswith("loss")) for e in history]
        return (t[-1] + t[-2]) / 2 / t[0]

    d, s = fall(ddp["loss_history"]), fall(single["loss_history"])
    # both learn (measured: ~0.87 single-process), and at the same pace within the epoch noise
    assert d < 0.95 and s < 0.95, (d, s)
    assert abs(d - s) < 0.1, (d, s)


# ------------------------------------------------------------------ mpn_plugin/distributed.py
def test_single_process_run_is_untouched(monkeypatch):
    """Without torchrun (no WORLD_SIZE, or 1) nothing joins a process group."""
    import torch.nn as nn

    from mpn_plugin import distributed
    for value in (None, "1"):
        if value is None:
            monkeypatch.delenv("WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("WORLD_SIZE", value)
        assert distributed.init_distributed() is None
    assert not distributed.is_distributed() and distributed.rank() == 0
    assert distributed.is_main_process()
    distributed.cleanup()                                   # a no-op here
    model = nn.Linear(2, 2)
    assert distributed.unwrap(model) is model
    assert distributed.unwrap(nn.DataParallel(model)) is model


class TwoPartNet:
    """A model with a backbone (conv + BN) and a head BN, built the same on every rank."""

    @staticmethod
    def build():
        import torch
        import torch.nn as nn
        torch.manual_seed(0)
        net = nn.Module()
        net.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        net.head = nn.BatchNorm1d(4)
        net.forward = lambda x: net.head(net.backbone(x).mean((2, 3)))
        return net


def _two_ranks(rank, world, store_path, out_dir):
    """One rank of test_two_ranks_average_gradients_and_split_identities (spawned)."""
    import torch
    import torch.distributed as dist

    from mpn_plugin import distributed
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    # a file store: no port to pick (and none another process could take first)
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world), rank=rank,
                            world_size=world)
    out = {"init": list(distributed.init_distributed()), "rank": distributed.rank(),
           "main": distributed.is_main_process(), "distributed": distributed.is_distributed()}
    net = TwoPartNet.build()
    try:                                       # SyncBatchNorm: GPUs only (a clear error here)
        distributed.wrap_model(net, rank, sync_bn=True)
    except ValueError as exc:
        out["sync_bn_error"] = str(exc)
    ddp = distributed.wrap_model(net, rank)
    out["wrapped"] = type(ddp).__name__
    out["unwrapped_is_model"] = distributed.unwrap(ddp) is net
    out["backbone_bn"] = type(net.backbone[1]).__name__
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(rank))  # own data
    ddp(x).pow(2).sum().backward()
    out["grad"] = net.backbone[0].weight.grad.flatten().tolist()
    opt.step()
    out["weight"] = net.backbone[0].weight.detach().flatten().tolist()
    # the training loader: the same dataset, this rank's identity sampler
    data = [(f"{pid}_{k}.jpg", pid, k % 2) for pid in range(8) for k in range(4)]
    ds = type("Images", (torch.utils.data.Dataset,), {
        "train": data, "__len__": lambda self: len(data),
        "__getitem__": lambda self, i: self.train[i][1]})()
    base = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)
    loader = distributed.distributed_train_loader(base, batch_size=4, num_instances=2, seed=3)
    out["sampler_rank"] = loader.sampler.rank
    out["pids"] = sorted({int(p) for batch in loader for p in batch})
    out["batch_sizes"] = sorted({len(batch) for batch in loader})
    distributed.cleanup()
    out["after_cleanup"] = distributed.is_distributed()
    with open(osp.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)


def test_two_ranks_average_gradients_and_split_identities(tmp_path):
    """Two gloo ranks on this CPU (spawned, a file store): the helpers report the ranks, DDP
    averages the gradients (both ranks take the same step from different data), each rank's
    loader draws its own identities, and train.sync_bn on CPU is a clear error (PyTorch's
    SyncBatchNorm needs CUDA; DDP used to refuse it with "only work with GPU modules")."""
    import torch.multiprocessing as mp
    mp.spawn(_two_ranks, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r = [json.load(open(tmp_path / f"rank{k}.json")) for k in (0, 1)]
    for k in (0, 1):
        assert r[k]["init"] == [k, 2, k] and r[k]["rank"] == k and r[k]["distributed"]
        assert r[k]["main"] == (k == 0)
        assert r[k]["wrapped"] == "DistributedDataParallel" and r[k]["unwrapped_is_model"]
        assert r[k]["backbone_bn"] == "BatchNorm2d"                 # per rank on CPU
        assert "train.sync_bn False" in r[k]["sync_bn_error"]
        assert r[k]["sampler_rank"] == k and r[k]["batch_sizes"] == [4]
        assert not r[k]["after_cleanup"]
    assert r[0]["grad"] == pytest.approx(r[1]["grad"], abs=1e-6)      # all-reduced
    assert r[0]["weight"] == pytest.approx(r[1]["weight"], abs=1e-6)  # the same step
    assert any(abs(g) > 1e-4 for g in r[0]["grad"])
    assert r[0]["pids"] and not set(r[0]["pids"]) & set(r[1]["pids"])  # disjoint identities
