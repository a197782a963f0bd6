"""test.readout (issue 29): ``mt`` is the paper's test feature, bit for bit; ``at_uniform`` and
``concat`` (beyond the paper) read the AT heads on uniform strips; the ONNX wrapper and the
post-training evaluation of every readout use the same function."""
import pytest
import torch

from mpn_plugin.config import check_config, get_default_config
from mpn_plugin.export import InferenceModel
from mpn_plugin.models import build_mpn
from mpn_plugin.models.mpn import READOUTS, readout_features
from mpn_plugin.models.part_maps import part_feature_maps
from mpn_plugin.train import evaluate_readouts


def _trained_like(model):
    """Non-trivial BN statistics (a few training batches), then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 96, 32))
    return model.eval()


@pytest.fixture
def mpn_and_f():
    """A small MPN with non-trivial BN statistics, an input x and its F."""
    torch.manual_seed(0)
    model = _trained_like(build_mpn(7, backbone="resnet18", num_parts=3, dim=16))
    x = torch.randn(3, 3, 96, 32)
    with torch.no_grad():
        return model, x, model.backbone(x)


def test_mt_readout_is_bit_identical_to_the_paper_test_feature(mpn_and_f):
    model, x, F = mpn_and_f
    with torch.no_grad():
        # the eval forward before test.readout existed: `self.main_task(F).flatten(1)`
        reference = model.main_task(F).flatten(1)                    # h (Eq. 2)
        assert torch.equal(model(x), reference)
        assert model.readout == "mt" and model.feature_dim == reference.shape[1]
    baseline = _trained_like(build_mpn(7, variant="mpn_baseline", backbone="resnet18",
                                       num_parts=3, dim=16))
    with torch.no_grad():                      # and the Baseline's `self.auxiliary_task(F)`
        assert torch.equal(baseline(x), baseline.auxiliary_task(baseline.backbone(x)).flatten(1))


def test_at_uniform_and_concat_read_the_auxiliary_heads_on_uniform_strips(mpn_and_f):
    model, x, F = mpn_and_f
    with torch.no_grad():
        h = model.main_heads.forward_whole(F).flatten(1)
        g = model.auxiliary_heads.forward_parts(
            part_feature_maps(F, 3, variant="uniform")).flatten(1)
        assert not torch.allclose(h, g)
        model.readout = "at_uniform"
        assert torch.equal(model(x), g)
        model.readout = "concat"
        assert torch.equal(model(x), torch.cat([h, g], 1))
        assert model.feature_dim == 2 * 3 * 16


def test_readouts_a_model_cannot_give_are_refused():
    with pytest.raises(ValueError, match="mt_only"):
        build_mpn(3, variant="mpn_mt_only", backbone="resnet18", readout="at_uniform")
    with pytest.raises(ValueError, match="concat"):
        build_mpn(3, variant="mpn_baseline", backbone="resnet18", readout="concat")
    baseline = build_mpn(3, variant="mpn_baseline", backbone="resnet18", num_parts=2,
                         dim=8).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():                      # the Baseline's mt readout is its g
        g = baseline(x)
        baseline.readout = "at_uniform"
        assert torch.equal(baseline(x), g)
    with pytest.raises(ValueError, match="readout"):
        readout_features(torch.zeros(1, 8, 4, 2), None, None, 2, "h")
    cfg = get_default_config()
    cfg.merge_from_list(["test.extra_readouts", "['mt', 'global']"])
    with pytest.raises(ValueError, match="extra_readouts.*global"):
        check_config(cfg)


@pytest.mark.parametrize("readout", READOUTS)
def test_inference_model_follows_the_readout(readout):
    torch.manual_seed(0)
    model = _trained_like(build_mpn(7, backbone="resnet18", num_parts=2, dim=8, readout=readout))
    net = InferenceModel(model, normalize=False).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))
    # only the heads the readout runs are kept (so only they are exported)
    assert (net.main_heads is not None) == (readout != "at_uniform")
    assert (net.auxiliary_heads is not None) == (readout != "mt")


class _FakeEngine:
    """Stands in for a trained engine: its test scores the model's current readout."""

    def __init__(self, model):
        self.unwrapped_model = model
        self.last_results = {"set": {"rank1": 0.5, "mAP": 0.4}}
        self.seen = []

    def test(self, **kwargs):
        readout = self.unwrapped_model.readout
        self.seen.append(readout)
        score = {"mt": 0.1, "at_uniform": 0.2, "concat": 0.3}[readout]
        self.last_results["set"] = {"rank1": score, "mAP": score}   # in place, as torchreid


def test_evaluate_readouts_scores_each_and_restores_the_model():
    model = build_mpn(3, variant="mpn_mt_only", backbone="resnet18", num_parts=2, dim=8)
    engine = _FakeEngine(model)
    run_kwargs = dict(dist_metric="cosine", normalize_feature=True, save_dir="", ranks=[1],
                      use_metric_cuhk03=False, rerank=False)
    out = evaluate_readouts(engine, ["mt", "at_uniform", "concat"], run_kwargs)
    assert engine.seen == ["mt"]                           # MT Only has no AT heads
    assert out == {"mt": {"set": {"rank1": 0.1, "mAP": 0.1}}}
    assert engine.last_results == {"set": {"rank1": 0.5, "mAP": 0.4}}   # the run's own result
    mpn = build_mpn(3, backbone="resnet18", num_parts=2, dim=8)
    engine = _FakeEngine(mpn)
    own = engine.last_results                      # what a caller may hold (train._run does)
    out = evaluate_readouts(engine, list(READOUTS), run_kwargs)
    assert [out[r]["set"]["mAP"] for r in READOUTS] == [0.1, 0.2, 0.3]
    assert mpn.readout == "mt"
    assert own == {"set": {"rank1": 0.5, "mAP": 0.4}} and engine.last_results is own
