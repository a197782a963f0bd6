"""Registration with torchreid at import, and checkpoints that load with weights_only=True."""
import os

import numpy as np
import pytest
import torch

from mpn_plugin import compat
from mpn_plugin.engine import ENGINES, MPNEngine
from mpn_plugin.models import build_mpn


def test_import_registers_models_datasets_engines():
    factory = compat.model_factory()
    for name in ("mpn", "mpn_o", "mpn_baseline", "mpn_mt_only", "mpn_naive_mtl"):
        assert name in factory
    registry = vars(compat.datasets)["__image_datasets"]
    for name in ("synthetic_pedestrians", "market1501_prior", "dukemtmcreid_prior",
                 "cuhk03_prior", "msmt17_prior"):
        assert name in registry, name
    assert {"mpn", "softmax", "triplet"} <= set(ENGINES)


def test_import_registers_prior_datasets_with_default_options(monkeypatch):
    """torchreid's own data managers get prior items at once (the default backbones' stride):
    the registration done at import, run again here (other tests re-register with their own
    options)."""
    from mpn_plugin import registry as registry_mod
    monkeypatch.setattr(registry_mod, "_DONE", False)
    registry_mod.register()
    registry = vars(compat.datasets)["__image_datasets"]
    for name in ("synthetic_pedestrians", "market1501_prior", "msmt17_prior"):
        assert registry[name].prior_options.feature_stride == 16, name
        assert registry[name].prior_options.enabled, name
    assert ENGINES["mpn"] is MPNEngine


def test_layout_is_resolved_once():
    assert compat.LAYOUT in ("pypi", "upstream")
    assert compat.models.build_model is compat.reid.models.build_model


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=16)
    path = compat.save_checkpoint(
        {"state_dict": model.state_dict(), "epoch": 3, "rank1": np.float32(0.5)},
        str(tmp_path))
    assert os.path.basename(path) == "model.pth.tar-3"
    # a plain weights_only load works: no numpy objects were pickled
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["rank1"] == 0.5 and isinstance(ckpt["rank1"], float)
    other = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=16)
    compat.load_model_weights(other, path)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_torchreid_written_checkpoint_loads_with_weights_only(tmp_path):
    model = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=16)
    # exactly what torchreid's engine writes: a numpy scalar as rank1
    compat.utils.save_checkpoint({"state_dict": model.state_dict(), "epoch": 1,
                                  "rank1": np.float32(0.25)}, str(tmp_path))
    path = str(tmp_path / "model.pth.tar-1")
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # torch >= 2.6 default rejects it
    ckpt = compat.load_checkpoint(path)
    assert float(ckpt["rank1"]) == pytest.approx(0.25)


def test_checkpoint_from_another_model_is_rejected_clearly(tmp_path):
    other = compat.models.build_model("resnet18", num_classes=5, pretrained=False)
    path = compat.save_checkpoint({"state_dict": other.state_dict(), "epoch": 1}, str(tmp_path))
    model = build_mpn(5, variant="mpn_o", backbone="resnet18", dim=16)
    with pytest.raises(ValueError, match="does not fit MPN"):
        compat.load_model_weights(model, path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        compat.load_checkpoint(str(tmp_path / "nope.pth"))


def test_safe_save_model_with_scheduler_none(tmp_path):
    class Tiny(compat.SafeCheckpointMixin, compat.engine.Engine):
        def __init__(self, model, optim):
            self._models, self._optims, self._scheds = {}, {}, {}
            self.register_model("model", model, optim, None)

    model = torch.nn.Linear(2, 2)
    engine = Tiny(model, torch.optim.SGD(model.parameters(), lr=0.1))
    engine.save_model(0, np.float64(0.75), str(tmp_path))
    ckpt = compat.load_checkpoint(str(tmp_path / "model" / "model.pth.tar-1"))
    assert ckpt["scheduler"] is None and ckpt["rank1"] == 0.75


def test_resume_restores_optimizer_and_epoch(tmp_path):
    model = torch.nn.Linear(3, 2)
    optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(optim, 2)
    model(torch.ones(1, 3)).sum().backward()
    optim.step()
    sched.step()
    compat.save_checkpoint({"state_dict": model.state_dict(), "epoch": 4,
                            "optimizer": optim.state_dict(), "scheduler": sched.state_dict()},
                           str(tmp_path))
    model2 = torch.nn.Linear(3, 2)
    optim2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.StepLR(optim2, 2)
    start = compat.resume_from_checkpoint(str(tmp_path / "model.pth.tar-4"), model2, optim2, sched2)
    assert start == 4
    assert torch.equal(model.weight, model2.weight)
    assert sched2.last_epoch == 1
    buf = optim2.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, optim.state_dict()["state"][0]["momentum_buffer"])
