"""The MPN engine's loss (Eq. 10) and a few optimisation steps on a fixed batch."""
import torch

from mpn_plugin.engine import MPNEngine, MPNLossConfig
from mpn_plugin.losses import (
    class_wise_alignment_loss,
    cosine_batch_hard_triplet_loss,
    part_id_loss,
)
from mpn_plugin.models import build_mpn


class _Engine(MPNEngine):
    """The engine without a data manager (only its loss and step are exercised here)."""

    def __init__(self, model, optimizer, loss):
        self.model, self.optimizer, self.loss_cfg = model, optimizer, loss
        from mpn_plugin.losses import build_alignment_loss
        self.alignment_loss = build_alignment_loss(loss.alignment)
        self.epoch, self.batch_idx, self.num_batches = 0, 0, 1
        self.use_gpu, self.warmup_epochs = False, 0


def fixed_batch():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 64, 32)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    return {"img": x, "pid": pids, "prior_mask": torch.ones(8, 4, 2),
            "prior_roi": torch.tensor([[0.0, 1.0]] * 8)}


def test_eq10_terms_match_the_loss_functions():
    torch.manual_seed(0)
    model = build_mpn(4, variant="mpn_o", backbone="resnet18", dim=32).train()
    engine = _Engine(model, None, MPNLossConfig(alignment_weight=0.5))
    b = fixed_batch()
    torch.manual_seed(1)
    terms = engine.compute_losses(model(b["img"], b["prior_mask"], b["prior_roi"]), b["pid"])
    assert set(terms) == {"loss_id_mt", "loss_id_at", "loss_tri", "loss_cf"}
    model.eval()  # recompute the same terms by hand from one forward in eval mode
    engine2 = _Engine(model, None, MPNLossConfig(alignment_weight=0.5))
    model.train()
    out = model(b["img"], b["prior_mask"], b["prior_roi"])
    t = engine2.compute_losses(out, b["pid"])
    assert torch.allclose(t["loss_id_mt"], part_id_loss(out["mt_logits"], b["pid"]))
    assert torch.allclose(t["loss_tri"], cosine_batch_hard_triplet_loss(out["h"], b["pid"], 0.2))
    assert torch.allclose(t["loss_cf"],
                          0.5 * class_wise_alignment_loss(out["h"], out["g"], b["pid"]))


def test_triplet_warmup_and_baseline_uses_g():
    torch.manual_seed(0)
    base = build_mpn(4, variant="mpn_baseline", backbone="resnet18", dim=32).train()
    b = fixed_batch()
    out = base(b["img"])
    terms = _Engine(base, None, MPNLossConfig()).compute_losses(out, b["pid"])
    assert set(terms) == {"loss_id_at", "loss_tri"}
    assert torch.allclose(terms["loss_tri"],
                          cosine_batch_hard_triplet_loss(out["g"], b["pid"], 0.2))
    e = _Engine(base, None, MPNLossConfig(triplet_start_epoch=2))
    assert "loss_tri" not in e.compute_losses(out, b["pid"])


def test_a_few_steps_on_a_fixed_batch_reduce_the_loss():
    torch.manual_seed(0)      # the model's weights: not whatever earlier tests left the RNG at
    model = build_mpn(4, variant="mpn", backbone="resnet18", dim=32).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    engine = _Engine(model, opt, MPNLossConfig())
    b = fixed_batch()
    totals = []
    for _ in range(8):
        summary = engine.forward_backward(b)
        totals.append(sum(v for k, v in summary.items() if k.startswith("loss")))
    assert totals[-1] < 0.9 * totals[0], totals


def test_mixed_precision_step_and_features():
    """train.amp: the forward runs in bfloat16 on CPU, the losses in float32, and a few steps
    still reduce the loss; test.amp: float32 features close to the float32 forward's."""
    torch.manual_seed(0)
    model = build_mpn(4, variant="mpn", backbone="resnet18", dim=32).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    engine = _Engine(model, opt, MPNLossConfig())
    engine.amp_train = True
    dtypes = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    b = fixed_batch()
    totals = []
    for _ in range(8):
        summary = engine.forward_backward(b)
        totals.append(sum(v for k, v in summary.items() if k.startswith("loss")))
    hook.remove()
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())   # master weights fp32
    assert totals[-1] < 0.9 * totals[0], totals
    model.eval()
    engine.flip_test, engine.amp_test = True, False
    ref = engine.extract_features(b["img"])
    engine.amp_test = True
    low = engine.extract_features(b["img"])
    assert low.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(ref, low).min() > 0.99


def test_staged_lr_optimizer_steps_each_shared_parameter_once():
    """PSA shares the heads' 1x1 convs and CA between MT and AT (Sec. 3.3): with staged_lr,
    torchreid lists a shared parameter once per child; build_optimizer keeps it once, so one
    SGD step moves it by exactly lr * grad (not twice that)."""
    from mpn_plugin.build import build_optimizer
    from mpn_plugin.config import get_default_config
    model = build_mpn(10, backbone="resnet18", dim=32)
    cfg = get_default_config()
    cfg.train.optim, cfg.train.lr, cfg.train.weight_decay = "sgd", 0.1, 0.0
    cfg.sgd.momentum = 0.0
    cfg.train.staged_lr, cfg.train.base_lr_mult = True, 0.1
    optimizer = build_optimizer(model, cfg)
    listed = [p for g in optimizer.param_groups for p in g["params"]]
    assert len(listed) == len({id(p) for p in listed}) == len(list(model.parameters()))
    shared = model.main_heads.parameters().__next__()
    assert any(shared is p for p in model.auxiliary_heads.parameters())  # really shared
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = shared.detach().clone()
    optimizer.step()
    assert torch.allclose(before - shared.detach(), torch.full_like(before, 0.1))


def test_build_engine_takes_every_option_from_the_config():
    """build_engine: each engine gets EngineOptions.from_cfg(cfg), one attribute per option;
    an engine built without options has EngineOptions' defaults."""
    from types import SimpleNamespace

    from mpn_plugin.build import build_engine
    from mpn_plugin.config import get_default_config
    from mpn_plugin.engine import EngineOptions, SoftmaxEngine, TripletEngine
    cfg = get_default_config()
    cfg.test.flip, cfg.train.warmup_epochs, cfg.train.amp, cfg.test.amp = True, 3, True, True
    cfg.test.multi_query, cfg.train.divergence_factor = "mean", 50.0
    cfg.train.checkpoint_freq, cfg.train.keep_last, cfg.test.precise_bn_batches = 2, 4, 5
    expected = EngineOptions(flip_test=True, warmup_epochs=3, amp_train=True, amp_test=True,
                             multi_query="mean", divergence_factor=50.0, checkpoint_freq=2,
                             keep_last=4, precise_bn_batches=5)
    assert EngineOptions.from_cfg(cfg) == expected
    datamanager = SimpleNamespace(train_loader=None, test_loader=None, num_train_pids=4)
    model = build_mpn(4, backbone="resnet18", dim=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for name, cls in (("mpn", MPNEngine), ("softmax", SoftmaxEngine),
                      ("triplet", TripletEngine)):
        cfg.engine.name = name
        engine = build_engine(cfg, datamanager, model, optimizer)
        assert type(engine) is cls
        assert {k: getattr(engine, k) for k in vars(expected)} == vars(expected), name
        plain = cls(datamanager, model, optimizer, use_gpu=False)
        assert {k: getattr(plain, k) for k in vars(expected)} == vars(EngineOptions()), name
