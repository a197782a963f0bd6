"""mpn_plugin.build: a config from a file and overrides without argv strings (the same config
as the command line's), and the prior-options wiring of the config."""
import pytest

from mpn_plugin.build import build_prior_options, load_config, uses_priors
from mpn_plugin.train import build_parser, setup_cfg

CONFIG = "configs/mpn_synthetic.yaml"


def test_load_config_equals_the_command_lines_config():
    opts = ["mpn.num_parts", "4", "train.max_epoch", "2"]
    argv = ["--config-file", CONFIG, "--root", "/data", "-t", "market1501", "--", *opts]
    cfg = load_config(CONFIG, opts, root="/data", targets=["market1501"])
    assert cfg.dump() == setup_cfg(build_parser().parse_args(argv)).dump()
    assert cfg.is_frozen() and cfg.mpn.num_parts == 4 and cfg.data.root == "/data"
    assert load_config(CONFIG, ["--", *opts]).dump() == load_config(CONFIG, opts).dump()
    with pytest.raises(AssertionError, match="Non-existent key"):      # yacs
        load_config(CONFIG, ["mpn.no_such_key", "1"])


def test_unchecked_config_is_the_same_config_without_the_value_checks():
    """check=False (comparing configs of finished runs) resolves the same values and skips
    only the value checks: an input smaller than the stride loads, and is refused checked."""
    opts = ["mpn.num_parts", "4"]
    assert load_config(CONFIG, opts, check=False).dump() == load_config(CONFIG, opts).dump()
    small = ["data.height", "8", "data.width", "8"]
    assert load_config(CONFIG, small, check=False).data.height == 8
    with pytest.raises(ValueError, match="data.height"):
        load_config(CONFIG, small)


@pytest.mark.parametrize("opts, priors, stride", [
    ([], True, 16),                                            # MPN with coarse priors
    (["mpn.last_stride", "2"], True, 32),                      # priors made at F's size
    (["model.name", "mpn_baseline"], False, 16),               # uniform division: no priors
    (["mpn.tasks", "mt_only"], False, 16),                     # no ATs
    (["model.name", "pcb_p6", "engine.name", "softmax"], False, 16),   # torchreid's model
])
def test_prior_options_follow_the_model(opts, priors, stride):
    cfg = load_config(CONFIG, opts)
    options = build_prior_options(cfg)
    assert uses_priors(cfg) is priors and options.enabled is priors
    assert options.feature_stride == stride
