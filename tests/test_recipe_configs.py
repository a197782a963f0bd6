"""Every config parses and builds its model and torchreid data manager (on fake roots), and
the paper's recipe values are what Sec. 5.1 says."""
import argparse
import glob
import os
import os.path as osp

import pytest
import torch
import yaml

from conftest import needs_mobilenetv2_weights
from fake_roots import make_all
from mpn_plugin import compat
from mpn_plugin.build import build_model
from mpn_plugin.config import imagedata_kwargs
from mpn_plugin.data import PriorOptions, register_prior_datasets
from mpn_plugin.models import MODEL_NAMES, VARIANTS, feature_stride, is_mpn_model
from mpn_plugin.train import setup_cfg

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# configs/probes/ holds lists of probe runs for tools/run_real_crops.py --probes (each entry
# names a training config and options), not training configs: tested with that tool
CONFIGS = sorted(c for c in glob.glob(osp.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
                 if osp.relpath(c, osp.join(ROOT, "configs")).split(os.sep)[0] != "probes")
PAPER = sorted(glob.glob(osp.join(ROOT, "configs", "mpn_*.yaml")))
PAPER = [c for c in PAPER if "synthetic" not in c]
FAST = ["data.workers", "0", "train.batch_size", "8", "sampler.num_instances", "2",
        "test.batch_size", "4"]


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory, tiny_root):
    root = make_all(str(tmp_path_factory.mktemp("fake")))
    import shutil
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"),
                    osp.join(root, "synthetic_pedestrians"))
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"),
                    osp.join(root, "error_free", "synthetic_pedestrians"))
    return root


def cfg_for(path, root, *opts, fast=True):
    args = argparse.Namespace(config_file=path, root="", sources=None, targets=None,
                              opts=["data.root", root if "baseline_ub" not in path else
                                    osp.join(root, "error_free"), *(FAST if fast else []), *opts])
    return setup_cfg(args)


#: options the tests set themselves (FAST, data.root)
OVERRIDDEN = set(FAST[::2]) | {"data.root"}
#: config key -> the built MPN's config field it sets (MPNConfig.from_cfg)
MODEL_FIELDS = {f"mpn.{k}": k for k in (
    "backbone", "last_stride", "num_parts", "dim", "use_attention", "attention_reduction",
    "tasks", "prior_variant", "backbone_weights", "classifier_init_std", "classifier_neck",
    "backbone_attention", "mt_pooling", "feature_clip")}
MODEL_FIELDS.update({"mpn.sharing.conv1": "sharing.conv1", "mpn.sharing.conv2": "sharing.conv2",
                     "mpn.sharing.attention": "sharing.attention",
                     "mpn.sharing.batchnorm": "sharing.batchnorm", "test.readout": "readout"})


def own_settings(path):
    """The settings a config file makes itself (flattened ``section.key``), without those of
    the file its ``_BASE_`` names."""
    with open(path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f) or {}
    loaded.pop("_BASE_", None)
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[prefix + k] = v
    walk(loaded, "")
    return flat


def lookup(obj, dotted):
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def same(got, want):
    if isinstance(want, (list, tuple)):
        return list(got) == list(want)
    if isinstance(want, float) or isinstance(got, float):
        return got == pytest.approx(want)
    return got == want


@pytest.mark.parametrize("path", CONFIGS, ids=[osp.relpath(c, ROOT) for c in CONFIGS])
def test_config_builds_model_and_datamanager(path, fake_root):
    cfg = cfg_for(path, fake_root)
    if cfg.model.pretrained and "mobilenetv2" in f"{cfg.model.name} {cfg.mpn.backbone}":
        needs_mobilenetv2_weights()   # ImageNet MobileNetV2: skips with the install line
    register_prior_datasets(PriorOptions.from_cfg(cfg, enabled=False,
                                                  feature_stride=feature_stride(cfg)))
    try:
        dm = compat.data.ImageDataManager(**imagedata_kwargs(cfg, use_gpu=False))
        model = build_model(cfg, dm.num_train_pids).eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, cfg.data.height, cfg.data.width))
    finally:
        register_prior_datasets()
    assert out.dim() == 2 and out.shape[0] == 1 and torch.isfinite(out).all()
    if cfg.model.name.startswith("mpn"):
        assert out.shape[1] == cfg.mpn.num_parts * cfg.mpn.dim
    # what the file exists for: every setting it makes itself (not its _BASE_'s) is in force,
    # and its model and data settings reach the built model and data manager
    own = own_settings(path)
    for key, value in own.items():
        if key in OVERRIDDEN:
            continue
        assert same(lookup(cfg, key), value), (key, lookup(cfg, key), value)
    assert (dm.height, dm.width) == (cfg.data.height, cfg.data.width)
    if "data.sources" in own:
        assert list(dm.sources) == list(cfg.data.sources)
    if is_mpn_model(cfg.model.name):
        variant, _ = MODEL_NAMES[cfg.model.name]
        fixed = VARIANTS[variant] if variant != "mpn" else {}
        for key, value in own.items():
            field = MODEL_FIELDS.get(key)
            if field is None or field.split(".")[0] in fixed:
                continue
            assert same(lookup(model.config, field), value), (key, field, value)
        for field, value in fixed.items():                  # the preset's own fields
            assert same(getattr(model.config, field), value), (field, value)


@pytest.mark.parametrize("path", PAPER, ids=[osp.basename(c) for c in PAPER])
def test_paper_recipe_values(path, fake_root):
    cfg = cfg_for(path, fake_root, fast=False)
    assert (cfg.data.height, cfg.data.width) == (384, 128)
    assert cfg.train.batch_size == 48 and cfg.sampler.num_instances == 8
    assert cfg.sampler.train_sampler == "RandomIdentitySampler"
    assert ((cfg.train.optim, cfg.train.lr, cfg.sgd.momentum, cfg.train.weight_decay)
            == ("sgd", 0.01, 0.9, 5e-4))
    assert cfg.train.max_epoch == 70 and cfg.train.stepsize == [20] and cfg.train.gamma == 0.1
    assert cfg.mpn.num_parts == 6 and cfg.mpn.loss.triplet_margin == 0.2
    assert cfg.mpn.loss.alignment == "class_wise" and cfg.mpn.loss.alignment_weight == 1.0
    assert {"random_flip", "random_erase"} <= set(cfg.data.transforms)
    assert cfg.mpn.prior.offline_translation_copies == 5
    assert cfg.test.dist_metric == "cosine" and cfg.mpn.backbone == "resnet50"


def test_unknown_key_is_rejected(fake_root):
    with pytest.raises((KeyError, AssertionError), match="mpn.nonsense"):
        cfg_for(CONFIGS[0], fake_root, "mpn.nonsense", "1")


def test_missing_market_root_names_the_folder(tmp_path):
    register_prior_datasets()
    with pytest.raises(FileNotFoundError, match="market1501"):
        compat.data.ImageDataManager(root=str(tmp_path), sources="market1501_prior",
                                     use_gpu=False, workers=0)


def instances_on_its_data(cfg, path):
    """``sampler.num_instances``, or what ``0`` (derived from the training set) gives on the
    data the config is for: CUHK01's 4 images per identity, Market-1501's ~17."""
    if cfg.sampler.num_instances != 0:
        return cfg.sampler.num_instances
    from mpn_plugin.data.sampler_check import derived_num_instances
    per_id = 4 if "cuhk01" in path else 17
    train = [(f"{i}.jpg", i // per_id, 0) for i in range(100 * per_id)]
    return derived_num_instances(train, cfg.train.batch_size)


CPU = sorted(glob.glob(osp.join(ROOT, "configs", "cpu", "*.yaml")))
CPU += sorted(glob.glob(osp.join(ROOT, "configs", "cuhk01", "*_mobilenetv2.yaml")))


@pytest.mark.parametrize("path", CPU, ids=[osp.relpath(c, ROOT) for c in CPU])
def test_cpu_recipe_values(path, fake_root):
    """The real-data recipe (docs/RESULTS.md): ImageNet MobileNetV2, staged lr for the MPN
    family, the BN classifier neck, MT-only test statistics, at least two batches per
    identity and epoch (CUHK01: ~4 images per identity -> A=2)."""
    cfg = cfg_for(path, fake_root, fast=False)
    assert cfg.model.pretrained and cfg.mpn.backbone == "mobilenetv2"
    if "baseline_plain" in path:         # the Baseline's own recipe: no staged lr, no neck
        assert not cfg.train.staged_lr and cfg.mpn.classifier_neck == "none"
        assert cfg.mpn.tasks == "at_only" and instances_on_its_data(cfg, path) == 2
    elif cfg.engine.name == "mpn":
        assert cfg.train.staged_lr and cfg.train.base_lr_mult == 0.1
        assert cfg.mpn.classifier_neck == "bn" and cfg.mpn.sharing.batchnorm == "affine"
        assert instances_on_its_data(cfg, path) == (2 if "cuhk01" in path else 4)
    else:
        assert cfg.model.name == "ide_mobilenetv2" and cfg.sampler.train_sampler == "RandomSampler"
