"""torchreid's own engines with the shared protocol (mpn_plugin/engine/baselines.py): the
linear lr warm-up reaches every step, mixed precision runs torchreid's step in bfloat16 on CPU,
and both learn a fixed batch (against the untrained model of the same seed)."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from mpn_plugin.engine.baselines import SoftmaxEngine, TripletEngine


class Net(nn.Module):
    """torchreid's model contract: logits in training ((logits, features) for triplet)."""

    def __init__(self, triplet=False):
        super().__init__()
        self.triplet = triplet
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.classifier = nn.Linear(8, 4)
        self.dtypes = []

    def forward(self, x):
        f = self.body(x)
        self.dtypes.append(f.dtype)
        y = self.classifier(f)
        return (y, f) if self.triplet else y


def engine(kind, **attrs):
    torch.manual_seed(0)
    model = Net(triplet=kind is TripletEngine)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    dm = SimpleNamespace(train_loader=None, test_loader=None, num_train_pids=4)
    kw = dict(margin=0.3) if kind is TripletEngine else {}
    e = kind(dm, model, opt, use_gpu=False, **kw)
    e.epoch, e.batch_idx, e.num_batches = 0, 0, 4
    e.__dict__.update(attrs)
    return e


def batch():
    """8 images of 4 identities: noise plus a colour of the identity (learnable, not trivial)."""
    g = torch.Generator().manual_seed(1)
    pids = torch.arange(4).repeat(2)
    colours = torch.randn(4, 3, 1, 1, generator=g)
    return {"img": torch.randn(8, 3, 16, 8, generator=g) + colours[pids], "pid": pids}


@pytest.mark.parametrize("kind", [SoftmaxEngine, TripletEngine])
def test_warmup_scales_the_lr_of_each_step_of_the_warmup_epochs(kind):
    e = engine(kind, warmup_epochs=2)
    seen = []
    for e.epoch in range(3):
        for e.batch_idx in range(4):
            e.forward_backward(batch())
            seen.append(e.optimizer.param_groups[0]["lr"])
    # step s of the 8 warm-up steps runs at 0.2 * s / 8; the third epoch at the full lr
    assert seen[:8] == pytest.approx([0.2 * s / 8 for s in range(1, 9)])
    assert seen[8:] == pytest.approx([0.2] * 4)


@pytest.mark.parametrize("kind", [SoftmaxEngine, TripletEngine])
def test_amp_runs_torchreids_step_in_bfloat16_and_both_learn(kind):
    for amp in (False, True):
        e = engine(kind, amp_train=amp)
        untrained = e.forward_backward(batch())                    # step 1: the seed's model
        losses = [e.forward_backward(batch()) for _ in range(15)]
        assert set(e.model.dtypes) == {torch.bfloat16 if amp else torch.float32}
        assert all(p.dtype == torch.float32 for p in e.model.parameters())
        total = sum(v for k, v in losses[-1].items() if k.startswith("loss"))
        start = sum(v for k, v in untrained.items() if k.startswith("loss"))
        assert total < 0.7 * start, (amp, untrained, losses[-1])
