"""The torchreid ``scripts/main.py`` workflow for MPN and the baselines, as importable functions.

``tools/train.py`` is a thin command line over :func:`main`. Models of the MPN family are
built from ``cfg.mpn``; any other torchreid model name (``pcb_p6``, ``resnet50``,
``osnet_x1_0``...) is built by torchreid's factory and trained by torchreid's own engines
(``engine.name: softmax | triplet``) on the same data and test protocol.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import List, Optional

import torch

from . import compat, distributed
from .config import (check_config, engine_run_kwargs, get_default_config, imagedata_kwargs,
                     lr_scheduler_kwargs, merge_config_file, mpn_model_kwargs,
                     optimizer_kwargs)
from .data.image_check import check_dataset_images, datasets_without
from .data.sampler_check import (AUTO_NUM_INSTANCES, derived_num_instances,
                                 identities_per_batch_error, identity_sampler_warning)
from .data.prior_datasets import FEATURE_STRIDE, PriorOptions, register_prior_datasets
from .engine import build_engine
from .models import MODEL_NAMES, MPN, VARIANTS, build_backbone


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train/evaluate MPN (or a torchreid baseline) with torchreid",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config-file", type=str, default="", help="path to a YAML config")
    parser.add_argument("-s", "--sources", type=str, nargs="+", help="source datasets")
    parser.add_argument("-t", "--targets", type=str, nargs="+", help="target datasets")
    parser.add_argument("--root", type=str, default="", help="root of the datasets")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="config overrides, e.g. train.max_epoch 10 mpn.num_parts 4 (after "
                             "-s/-t, separate them with --: -t market1501 -- train.max_epoch 1)")
    return parser


def setup_cfg(args: argparse.Namespace):
    cfg = get_default_config()
    if args.config_file:
        merge_config_file(cfg, args.config_file)
    if args.root:
        cfg.data.root = args.root
    if args.sources:
        cfg.data.sources = args.sources
    if args.targets:
        cfg.data.targets = args.targets
    opts = list(args.opts or [])
    if opts[:1] == ["--"]:       # `-t name -- key value`: '--' ends the dataset list
        opts = opts[1:]
    if opts:
        cfg.merge_from_list(opts)
    check_config(cfg)
    cfg.freeze()
    return cfg


def is_mpn_model(name: str) -> bool:
    return name in MODEL_NAMES


def mpn_kwargs_for(cfg) -> dict:
    """MPNConfig fields of ``cfg.model.name``: ``cfg.mpn``, with the fields that the named
    preset fixes (e.g. ``mpn_baseline``: tasks=at_only; ``*_mobilenetv2``: the backbone), and
    the input size (``data.height``, ``data.width``: MPN*'s RGA-S modules are built for it)."""
    variant, backbone = MODEL_NAMES[cfg.model.name]
    kwargs = mpn_model_kwargs(cfg)
    kwargs["input_size"] = (cfg.data.height, cfg.data.width)
    kwargs.update(VARIANTS[variant] if variant != "mpn" else {})
    if backbone:
        kwargs["backbone"] = backbone
    kwargs["pretrained"] = bool(cfg.model.pretrained)
    return kwargs


def uses_priors(cfg) -> bool:
    """Whether training items need coarse priors (MPN models with ATs and a non-uniform prior)."""
    if not is_mpn_model(cfg.model.name) or cfg.engine.name != "mpn":
        return False
    kwargs = mpn_kwargs_for(cfg)
    return kwargs["tasks"] != "mt_only" and kwargs["prior_variant"] != "uniform"


def feature_stride(cfg) -> int:
    """Input size / size of F for the config's backbone (the priors are made at F's size):
    16 for the ResNets and MobileNetV2 with last stride 1, 32 with last stride 2."""
    if not is_mpn_model(cfg.model.name):
        return FEATURE_STRIDE
    kwargs = mpn_kwargs_for(cfg)
    Hf, _ = build_backbone(kwargs["backbone"], kwargs["last_stride"]).feature_size(
        cfg.data.height, cfg.data.width)
    return cfg.data.height // Hf


def build_model_from_cfg(cfg, num_classes: int) -> torch.nn.Module:
    """MPN family: ``cfg.mpn`` (the named presets fix their own fields, e.g. ``mpn_baseline``
    sets tasks=at_only); other names: torchreid's factory (``ide_mobilenetv2`` included).
    ``model.pretrained`` starts the backbone from ImageNet weights."""
    if is_mpn_model(cfg.model.name):
        model = MPN(num_classes, loss="triplet", **mpn_kwargs_for(cfg))
        if cfg.mpn.init_weights:
            model.init_weights(cfg.mpn.init_weights)
        return model
    loss = "triplet" if cfg.engine.name == "triplet" else "softmax"
    try:
        return compat.models.build_model(cfg.model.name, num_classes=num_classes, loss=loss,
                                         pretrained=cfg.model.pretrained,
                                         use_gpu=torch.cuda.is_available())
    except OSError as exc:  # torchreid's own download (URLError is an OSError) failed
        raise RuntimeError(
            f"model.pretrained=True for torchreid's '{cfg.model.name}' downloads ImageNet "
            f"weights, which failed ({exc}). Offline: put the file in the torch hub cache "
            f"($TORCH_HOME/hub/checkpoints), use model.name ide_mobilenetv2 (ImageNet "
            "MobileNetV2 that installs offline), or model.pretrained False") from exc


def load_trained_model(config_file: str, checkpoint: str, root: str = "", opts=()):
    """Rebuild a trained model from its config and checkpoint, in eval mode.

    The number of training identities is read from the checkpoint's classifier, so the
    dataset need not be present.

    Args:
        config_file (str): the YAML the model was trained with.
        checkpoint (str): a checkpoint written by ``tools/train.py`` (loaded with
            ``weights_only=True``).
        root (str): dataset root (only stored in the returned config).
        opts: config overrides as ``key value`` pairs.

    Returns:
        (model, cfg)

    Examples::

        >>> model, cfg = load_trained_model('configs/mpn_synthetic.yaml',
        ...                                  'log/mpn_synthetic/model/model.pth.tar-12')
    """
    for path, what in ((config_file, "config"), (checkpoint, "checkpoint")):
        if not osp.isfile(path):
            raise FileNotFoundError(f"{what} file {path!r} does not exist")
    # the checkpoint holds every weight: no ImageNet weights needed (nor downloaded)
    cfg = setup_cfg(build_parser().parse_args(["--config-file", config_file]
                                              + (["--root", root] if root else []) + list(opts)
                                              + ["model.pretrained", "False"]))
    state = compat.state_dict_of(compat.load_checkpoint(checkpoint))
    suffixes = ("main_classifier.weight", "auxiliary_classifier.weight", "classifier.weight",
                "classifier.0.weight")
    weights = [v for k, v in state.items() if k.endswith(suffixes)]
    if not weights:
        raise ValueError(f"checkpoint {checkpoint!r} holds no classifier weight (keys ending in "
                         f"{suffixes}); is it a model checkpoint written by tools/train.py?")
    model = build_model_from_cfg(cfg, num_classes=weights[0].shape[-2])
    compat.load_model_weights(model, checkpoint)
    return model.eval(), cfg


def load_model_spec(spec: str, root: str = "", opts=()):
    """``NAME=CONFIG:CHECKPOINT`` (the ``--model`` argument of the tools) -> (name, model in
    eval mode, cfg); ``opts`` are config overrides (``key value`` pairs).

    Examples::

        >>> name, model, cfg = load_model_spec(
        ...     'MPN=configs/mpn_synthetic.yaml:log/mpn_synthetic/model/model.pth.tar-12')
    """
    if "=" not in spec or ":" not in spec.split("=", 1)[1]:
        raise ValueError(f"--model {spec!r}: expected NAME=CONFIG:CHECKPOINT, e.g. "
                         "MPN=configs/mpn_synthetic.yaml:log/mpn_synthetic/model/model.pth.tar-12")
    name, rest = spec.split("=", 1)
    config, ckpt = rest.rsplit(":", 1)
    try:
        model, cfg = load_trained_model(config, ckpt, root, opts)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--model {name}: {e}") from None
    return name, model, cfg


def build_datamanager(cfg, use_gpu: bool, excluded_images=()):
    """torchreid's ``ImageDataManager`` for ``cfg`` (without the image paths
    ``excluded_images``, :func:`~mpn_plugin.data.image_check.datasets_without`).

    Raises:
        ValueError: a batch asks for more identities than the training set has (torchreid's
            ``RandomIdentitySampler`` asserts it with a bare ``AssertionError``), with the
            numbers and the fix.
    """
    kwargs = imagedata_kwargs(cfg, use_gpu)
    if kwargs["train_sampler"] != "RandomIdentitySampler":
        kwargs["num_instances"] = 1       # read only by the identity sampler (any value works)
    elif kwargs["num_instances"] == AUTO_NUM_INSTANCES:
        raise ValueError("sampler.num_instances 0 (derived from the data) must be resolved "
                         "first: resolve_num_instances(cfg, use_gpu)")
    with datasets_without(list(cfg.data.sources) + list(cfg.data.targets), excluded_images):
        try:
            return compat.data.ImageDataManager(**kwargs)
        except AssertionError:
            if kwargs["train_sampler"] != "RandomIdentitySampler":
                raise
            # the same data with a sampler that asserts nothing, to count the identities
            train = compat.data.ImageDataManager(
                **dict(kwargs, train_sampler="RandomSampler")).train_loader.dataset.train
            error = identities_per_batch_error(train, cfg.train.batch_size,
                                               cfg.sampler.num_instances)
            if error is None:
                raise
            raise ValueError(error) from None


def resolve_num_instances(cfg, use_gpu: bool = False):
    """``cfg`` with ``sampler.num_instances 0`` replaced by the value derived from the training
    set (:func:`~mpn_plugin.data.sampler_check.derived_num_instances`); other values and other
    samplers: ``cfg`` unchanged."""
    if (cfg.sampler.num_instances != AUTO_NUM_INSTANCES
            or cfg.sampler.train_sampler != "RandomIdentitySampler"):
        return cfg
    probe = cfg.clone()
    probe.defrost()
    probe.sampler.train_sampler = "RandomSampler"          # asserts nothing about identities
    probe.sampler.num_instances = 1
    with datasets_without(list(cfg.data.sources) + list(cfg.data.targets), ()):
        train = compat.data.ImageDataManager(
            **imagedata_kwargs(probe, use_gpu)).train_loader.dataset.train
    resolved = cfg.clone()
    resolved.defrost()
    resolved.sampler.num_instances = derived_num_instances(train, cfg.train.batch_size)
    resolved.freeze()
    print(f"sampler.num_instances 0 -> {resolved.sampler.num_instances} (derived from the "
          f"training set: at most half the images of the median identity, a divisor of "
          f"train.batch_size {cfg.train.batch_size})")
    return resolved


def build_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """torchreid's ``build_optimizer`` with ``cfg.train``/``cfg.sgd``/``cfg.adam``, each
    parameter in exactly one group.

    With ``train.staged_lr``, torchreid collects the parameters of each top-level child, so a
    parameter shared by two children (PSA, Sec. 3.3: the 1x1 convs, CA and their BN affine
    parameters, shared by ``main_heads`` and ``auxiliary_heads``) is listed twice in the
    heads' group, and ``optimizer.step()`` then applies its update twice (twice the lr, and the
    momentum buffer advanced twice). The duplicates are removed here; each shared parameter
    already receives the gradients of both tasks through autograd.

    Examples::

        >>> optimizer = build_optimizer(model, cfg)
    """
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*duplicate parameters.*")
        optimizer = compat.optim.build_optimizer(model, **optimizer_kwargs(cfg))
    seen = set()
    for group in optimizer.param_groups:
        unique = []
        for p in group["params"]:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        group["params"] = unique
    return optimizer


def main(argv: Optional[List[str]] = None) -> dict:
    """Run training and/or evaluation; returns the final results per target dataset."""
    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    dist_info = distributed.init_distributed()       # torchrun: join the process group
    rank = dist_info[0] if dist_info else 0
    compat.utils.set_random_seed(cfg.train.seed + rank)  # DDP broadcasts rank 0's weights
    if rank != 0:                                     # rank 0 alone logs
        with open(os.devnull, "w") as null:
            sys.stdout = null
            try:
                return _run(cfg, dist_info)
            finally:
                sys.stdout = sys.__stdout__
                distributed.cleanup()
    os.makedirs(cfg.data.save_dir, exist_ok=True)
    log_name = "test.log" if cfg.test.evaluate else "train.log"
    console = sys.stdout
    with open(osp.join(cfg.data.save_dir, log_name + time.strftime("-%Y-%m-%d-%H-%M-%S")), "w") as f:
        # torchreid's Logger closes the console when garbage-collected: use a plain tee
        sys.stdout = _Tee(console, f)
        try:
            return _run(cfg, dist_info)
        finally:
            sys.stdout = console
            distributed.cleanup()


class _Tee:
    """Write to the console and a log file."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, msg):
        for s in self.streams:
            s.write(msg)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


class _NullWriter:
    """Stands in for torchreid's SummaryWriter on ranks other than 0."""

    def add_scalar(self, *args, **kwargs):
        pass

    def close(self):
        pass


def evaluate_readouts(engine, readouts, run_kwargs) -> dict:
    """Evaluate the engine's trained MPN once per test-time readout (``test.extra_readouts``;
    :data:`~mpn_plugin.models.mpn.READOUTS`), with the run's test protocol; the model's own
    readout is restored afterwards. Readouts the model cannot give (e.g. ``concat`` for the
    Baseline) and non-MPN models are left out.

    Returns:
        dict: readout -> {target dataset -> {"rank1", "mAP", ...}}.
    """
    model = engine.unwrapped_model
    if not isinstance(model, MPN):
        return {}
    own, kept, out = model.readout, dict(engine.last_results), {}
    test_kwargs = {k: run_kwargs[k] for k in ("dist_metric", "normalize_feature", "save_dir",
                                              "use_metric_cuhk03", "ranks", "rerank")}
    try:
        for readout in readouts:
            try:
                model.readout = readout
            except ValueError as e:
                print(f"[readouts] {readout}: left out ({e})")
                continue
            print(f"[readouts] test.readout {readout}")
            engine.test(**test_kwargs)
            out[readout] = dict(engine.last_results)
    finally:
        model.readout = own
        engine.last_results.clear()                 # the run's own results, in place
        engine.last_results.update(kept)
    for readout, res in out.items():
        for name, r in res.items():
            print(f"[readouts] {readout:<10} [{name}] Rank-1 {r['rank1']:.1%}  mAP {r['mAP']:.1%}")
    return out


def _run(cfg, dist_info=None) -> dict:
    use_gpu = torch.cuda.is_available()
    print(f"Show configuration\n{cfg}\n")
    print(f"torchreid layout: {compat.LAYOUT}; use_gpu: {use_gpu}; torch {torch.__version__}")

    priors = uses_priors(cfg)
    register_prior_datasets(PriorOptions.from_cfg(
        cfg, enabled=priors, feature_stride=feature_stride(cfg) if priors else FEATURE_STRIDE))
    cfg = resolve_num_instances(cfg, use_gpu)
    datamanager = build_datamanager(cfg, use_gpu)
    skipped = check_dataset_images(datamanager, cfg.data.corrupt_images, cfg.data.save_dir,
                                   workers=max(1, cfg.data.workers),
                                   write_list=distributed.is_main_process())
    if skipped:                      # data.corrupt_images skip: the same data without them
        datamanager = build_datamanager(cfg, use_gpu, excluded_images=skipped)
    if cfg.sampler.train_sampler == "RandomIdentitySampler":
        warning = identity_sampler_warning(datamanager.train_loader.dataset.train,
                                           cfg.sampler.num_instances)
        if warning:
            print(f"WARNING: {warning}")
    if cfg.test.multi_query != "none":   # fail before training, not at the first evaluation
        from .evaluation.multi_query import gt_bbox_dir
        for name in cfg.data.targets:
            gt_bbox_dir(datamanager.test_loader[name]["query"].dataset, cfg.test.multi_query, name)

    model = build_model_from_cfg(cfg, datamanager.num_train_pids)
    num_params, flops = compat.utils.compute_model_complexity(
        model, (1, 3, cfg.data.height, cfg.data.width))
    print(f"Model complexity: params={num_params:,} flops={flops:,}")
    if cfg.model.load_weights:
        compat.load_model_weights(model, cfg.model.load_weights)
    if use_gpu:
        model = model.cuda(dist_info[2] if dist_info else None)

    optimizer = build_optimizer(model, cfg)
    scheduler = compat.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    run_kwargs = engine_run_kwargs(cfg)
    if cfg.model.resume:
        run_kwargs["start_epoch"] = compat.resume_from_checkpoint(
            cfg.model.resume, model, optimizer=optimizer, scheduler=scheduler)

    print(f"Building {cfg.engine.name}-engine for image-reid")
    engine = build_engine(cfg, datamanager, model, optimizer, scheduler, use_gpu=use_gpu)
    engine.multi_query = cfg.test.multi_query
    if dist_info:
        # checkpoints and evaluation use the unwrapped model; the training step uses DDP
        rank, world, local_rank = dist_info
        engine.model = distributed.wrap_model(model, local_rank, cfg.train.sync_bn)
        engine.train_loader = distributed.distributed_train_loader(
            engine.train_loader, cfg.train.batch_size, cfg.sampler.num_instances, cfg.train.seed)
        print(f"DistributedDataParallel: {world} processes ({'nccl' if use_gpu else 'gloo'}), "
              f"{cfg.train.batch_size} images per process and step, "
              f"{len(engine.train_loader)} steps per epoch")
        if rank != 0:
            engine.writer = _NullWriter()
    start = time.time()
    engine.run(**run_kwargs)
    wall = round(time.time() - start, 1)
    results = {"wall_time_s": wall, "results": dict(engine.last_results),
               "loss_history": getattr(engine, "loss_history", []),
               "world_size": dist_info[1] if dist_info else 1, "skipped_images": skipped}
    if cfg.test.extra_readouts and (not dist_info or dist_info[0] == 0):
        results["readouts"] = evaluate_readouts(engine, cfg.test.extra_readouts, run_kwargs)
    if dist_info and dist_info[0] != 0:
        return results
    with open(osp.join(cfg.data.save_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    for name, r in engine.last_results.items():
        print(f"[{name}] Rank-1 {r['rank1']:.1%}  mAP {r['mAP']:.1%}  "
              f"(chance Rank-1 {r['chance_rank1']:.1%}, {r['num_query_ids']} query identities)")
    return results
