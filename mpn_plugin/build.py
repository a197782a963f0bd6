"""From a config to the objects of a run: config, model, data manager, optimizer, scheduler and
engine (torchreid's ``scripts/main.py`` steps, as functions of a config; no argv strings).

``mpn_plugin.train`` (``tools/train.py``) runs them in order; the inference and analysis tools
rebuild trained models through :func:`load_trained_model`.

Examples::

    >>> cfg = load_config('configs/mpn_synthetic.yaml', ['train.max_epoch', '2'])
    >>> register_prior_datasets(build_prior_options(cfg))
    >>> cfg = resolve_num_instances(cfg, use_gpu=False)
    >>> datamanager = build_datamanager(cfg, use_gpu=False)
    >>> model = build_model(cfg, datamanager.num_train_pids)
    >>> optimizer = build_optimizer(model, cfg)
    >>> scheduler = build_scheduler(optimizer, cfg)
    >>> engine = build_engine(cfg, datamanager, model, optimizer, scheduler)
    >>> engine.run(**engine_run_kwargs(cfg))
"""
from __future__ import annotations

import os.path as osp
import warnings
from typing import Optional, Sequence

import torch

from . import compat
from .config import (
    check_config,
    get_default_config,
    imagedata_kwargs,
    lr_scheduler_kwargs,
    merge_config_file,
    optimizer_kwargs,
)
from .data import PriorOptions
from .data.image_check import datasets_without
from .data.sampler_check import (
    AUTO_NUM_INSTANCES,
    derived_num_instances,
    identities_per_batch_error,
)
from .engine import ENGINES, EngineOptions, MPNEngine, TripletEngine
from .losses import MPNLossConfig
from .models import MPN, TORCHREID_STRIDE, MPNConfig, feature_stride, is_mpn_model

__all__ = ["load_config", "build_model", "uses_priors", "build_prior_options",
           "build_datamanager", "resolve_num_instances", "build_optimizer", "build_scheduler",
           "build_engine", "load_trained_model", "load_model_spec"]


def load_config(config_file: str = "", opts: Sequence[str] = (), root: str = "",
                sources: Optional[Sequence[str]] = None,
                targets: Optional[Sequence[str]] = None, check: bool = True):
    """The defaults (:func:`~mpn_plugin.config.get_default_config`), then ``config_file``,
    ``root``, ``sources``, ``targets`` and ``opts``, checked
    (:func:`~mpn_plugin.config.check_config`) and frozen.

    Args:
        config_file (str): a YAML config ('' = the defaults).
        opts (sequence of str): overrides as ``key value`` pairs (a leading ``--``, which ends
            a dataset list on a command line, is skipped).
        root (str): ``data.root`` ('' = keep the config's).
        sources, targets (sequence of str, optional): ``data.sources`` / ``data.targets``.
        check (bool): run the value checks (they build the backbone once to measure its
            stride); False only to compare configs, never to train from one.

    Examples::

        >>> cfg = load_config('configs/mpn_synthetic.yaml', ['mpn.num_parts', '4'])
        >>> cfg.mpn.num_parts
        4
    """
    cfg = get_default_config()
    if config_file:
        merge_config_file(cfg, config_file)
    if root:
        cfg.data.root = root
    if sources:
        cfg.data.sources = list(sources)
    if targets:
        cfg.data.targets = list(targets)
    opts = list(opts or [])
    if opts[:1] == ["--"]:
        opts = opts[1:]
    if opts:
        cfg.merge_from_list(opts)
    if check:
        check_config(cfg)
    cfg.freeze()
    return cfg


def build_model(cfg, num_classes: int) -> torch.nn.Module:
    """The model of ``cfg.model.name``: the MPN family from
    :meth:`~mpn_plugin.models.MPNConfig.from_cfg` (the named presets fix their own fields, e.g.
    ``mpn_baseline`` sets tasks=at_only), other names from torchreid's factory
    (``ide_mobilenetv2`` included). ``model.pretrained`` starts the backbone from ImageNet
    weights; ``mpn.init_weights`` then loads MPN's own starting weights.

    Args:
        cfg (CfgNode): the config.
        num_classes (int): number of training identities.

    Examples::

        >>> model = build_model(cfg, num_classes=751)
    """
    if is_mpn_model(cfg.model.name):
        model = MPN(num_classes, MPNConfig.from_cfg(cfg), loss="triplet")
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


def uses_priors(cfg) -> bool:
    """Whether training items need coarse priors (MPN models with ATs and a non-uniform prior,
    trained by MPN's engine)."""
    if not is_mpn_model(cfg.model.name) or cfg.engine.name != "mpn":
        return False
    config = MPNConfig.from_cfg(cfg)
    return config.tasks != "mt_only" and config.prior_variant != "uniform"


def build_prior_options(cfg) -> PriorOptions:
    """The options of the prior-aware datasets for ``cfg`` (``mpn.prior``; priors on when
    :func:`uses_priors`; made at the size of F, :func:`~mpn_plugin.models.feature_stride`),
    for :func:`~mpn_plugin.data.register_prior_datasets`.

    Examples::

        >>> register_prior_datasets(build_prior_options(cfg))
    """
    enabled = uses_priors(cfg)
    # F's stride is read only with priors on; it is measured on a backbone built for it, whose
    # initialisation draws from the global RNG, ahead of the model's own (seeded runs)
    stride = feature_stride(cfg) if enabled else TORCHREID_STRIDE
    return PriorOptions.from_cfg(cfg, enabled=enabled, feature_stride=stride)


def build_datamanager(cfg, use_gpu: bool, excluded_images=()):
    """torchreid's ``ImageDataManager`` for ``cfg`` (without the image paths
    ``excluded_images``, :func:`~mpn_plugin.data.image_check.datasets_without`).

    Raises:
        ValueError: a batch asks for more identities than the training set has (torchreid's
            ``RandomIdentitySampler`` asserts it with a bare ``AssertionError``), with the
            numbers and the fix.

    Examples::

        >>> datamanager = build_datamanager(resolve_num_instances(cfg), use_gpu=False)
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
    samplers: ``cfg`` unchanged.

    Examples::

        >>> cfg = resolve_num_instances(cfg, use_gpu=False)
    """
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg):
    """torchreid's ``build_lr_scheduler`` with ``cfg.train`` (``lr_scheduler``, ``stepsize``,
    ``gamma``, ``max_epoch``).

    Examples::

        >>> scheduler = build_scheduler(optimizer, cfg)
    """
    return compat.optim.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))


def build_engine(cfg, datamanager, model, optimizer, scheduler=None, use_gpu: bool = False):
    """The engine named by ``cfg.engine.name`` (:data:`~mpn_plugin.engine.ENGINES`), with the
    config's loss settings (MPN: :meth:`~mpn_plugin.losses.MPNLossConfig.from_cfg`; torchreid's
    engines: ``cfg.loss``) and its protocol options
    (:meth:`~mpn_plugin.engine.EngineOptions.from_cfg`).

    Examples::

        >>> engine = build_engine(cfg, datamanager, model, optimizer, scheduler)
    """
    name = cfg.engine.name
    if name not in ENGINES:
        raise KeyError(f"engine.name='{name}' is not registered; choose one of {sorted(ENGINES)}")
    cls = ENGINES[name]
    common = dict(scheduler=scheduler, use_gpu=use_gpu, options=EngineOptions.from_cfg(cfg))
    if issubclass(cls, MPNEngine):
        return cls(datamanager, model, optimizer, loss=MPNLossConfig.from_cfg(cfg), **common)
    if issubclass(cls, TripletEngine):
        return cls(datamanager, model, optimizer, margin=cfg.loss.triplet.margin,
                   weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                   label_smooth=cfg.loss.softmax.label_smooth, **common)
    return cls(datamanager, model, optimizer, label_smooth=cfg.loss.softmax.label_smooth,
               **common)


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
    cfg = load_config(config_file, list(opts or []) + ["model.pretrained", "False"], root=root)
    state = compat.state_dict_of(compat.load_checkpoint(checkpoint))
    suffixes = ("main_classifier.weight", "auxiliary_classifier.weight", "classifier.weight",
                "classifier.0.weight")
    weights = [v for k, v in state.items() if k.endswith(suffixes)]
    if not weights:
        raise ValueError(f"checkpoint {checkpoint!r} holds no classifier weight (keys ending in "
                         f"{suffixes}); is it a model checkpoint written by tools/train.py?")
    model = build_model(cfg, num_classes=weights[0].shape[-2])
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
