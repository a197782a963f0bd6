"""Configuration: a torchreid-style default config plus MPN's own node.

The PyPI torchreid ships no ``scripts/default_config.py``, so :func:`get_default_config` provides
the same node layout (``model, data, market1501, cuhk03, sampler, train, sgd, adam, rmsprop,
loss, test``) and :func:`add_mpn_config` adds ``engine`` and ``mpn`` (detectron2 style). YAML files
and trailing ``opts`` overrides are merged on top; unknown keys are rejected by yacs.

Examples::

    >>> cfg = get_default_config()
    >>> cfg.merge_from_file('configs/mpn_synthetic.yaml')
    >>> cfg.merge_from_list(['train.max_epoch', '2'])
"""
from __future__ import annotations

from yacs.config import CfgNode as CN


def get_default_config() -> CN:
    """torchreid's default configuration nodes, with :func:`add_mpn_config` applied."""
    cfg = CN()

    cfg.model = CN()
    cfg.model.name = "mpn"
    cfg.model.pretrained = False  # True needs internet (ImageNet weights): fails offline
    cfg.model.load_weights = ""   # weights of the whole model (e.g. for test_only)
    cfg.model.resume = ""         # checkpoint to resume training from

    cfg.data = CN()
    cfg.data.type = "image"
    cfg.data.root = "data"
    cfg.data.sources = ["synthetic_pedestrians"]
    cfg.data.targets = ["synthetic_pedestrians"]
    cfg.data.workers = 2
    cfg.data.split_id = 0
    cfg.data.height = 256
    cfg.data.width = 128
    cfg.data.combineall = False
    cfg.data.transforms = ["random_flip"]
    cfg.data.k_tfm = 1
    cfg.data.norm_mean = [0.485, 0.456, 0.406]
    cfg.data.norm_std = [0.229, 0.224, 0.225]
    cfg.data.save_dir = "log"
    cfg.data.load_train_targets = False
    # every train/query/gallery image is decoded once before training; an unreadable one
    # (truncated, empty, not an image): error (names it) | skip (listed in
    # save_dir/skipped_images.txt and left out)
    cfg.data.corrupt_images = "error"

    cfg.market1501 = CN()
    cfg.market1501.use_500k_distractors = False
    cfg.cuhk03 = CN()
    cfg.cuhk03.labeled_images = False
    cfg.cuhk03.classic_split = False
    cfg.cuhk03.use_metric_cuhk03 = False

    cfg.sampler = CN()
    cfg.sampler.train_sampler = "RandomIdentitySampler"
    cfg.sampler.train_sampler_t = "RandomSampler"
    # A (images per identity); batch_size = S * A; 0 = derived from the training set (the
    # largest divisor of batch_size <= half the median images per identity, at least 2)
    cfg.sampler.num_instances = 8
    cfg.sampler.num_cams = 1
    cfg.sampler.num_datasets = 1

    cfg.train = CN()
    cfg.train.optim = "sgd"
    cfg.train.lr = 0.01
    cfg.train.weight_decay = 5e-4
    cfg.train.max_epoch = 70
    cfg.train.start_epoch = 0
    cfg.train.batch_size = 48
    cfg.train.fixbase_epoch = 0
    # the randomly initialised top-level children of MPN (heads, classifiers, necks, MPN*'s
    # RGA-S): trained during fixbase_epoch, full lr under staged_lr (the trunk: base_lr_mult)
    cfg.train.open_layers = ["backbone_attention", "main_heads", "auxiliary_heads",
                             "main_classifier", "auxiliary_classifier", "main_neck",
                             "auxiliary_neck"]
    cfg.train.staged_lr = False
    cfg.train.new_layers = ["backbone_attention", "main_heads", "auxiliary_heads",
                            "main_classifier", "auxiliary_classifier", "main_neck",
                            "auxiliary_neck"]
    cfg.train.base_lr_mult = 1.0
    cfg.train.lr_scheduler = "single_step"
    cfg.train.stepsize = [20]
    cfg.train.gamma = 0.1
    cfg.train.warmup_epochs = 0  # linear lr warm-up (epochs), 0 = off
    cfg.train.sync_bn = False    # torchrun on GPUs only: SyncBatchNorm in the backbone
    cfg.train.amp = False        # mixed precision: bf16 autocast on CPU, fp16 + scaling on CUDA
    cfg.train.print_freq = 20
    cfg.train.seed = 1
    # stop when the total loss exceeds this factor x max(its first iteration, 1), or, checked
    # after every epoch, the weights' L2 norm exceeds it x max(their start norm, 1): a diverging
    # run stops (naming the largest term / weight) before it writes a checkpoint; 0 = non-finite
    # only
    cfg.train.divergence_factor = 1000.0
    cfg.train.checkpoint_freq = 0  # also save a checkpoint every N epochs (0 = only at evaluations)
    cfg.train.keep_last = 0        # keep this run's last N epoch checkpoints (0 = keep all)

    cfg.sgd = CN()
    cfg.sgd.momentum = 0.9
    cfg.sgd.dampening = 0.0
    cfg.sgd.nesterov = False
    cfg.rmsprop = CN()
    cfg.rmsprop.alpha = 0.99
    cfg.adam = CN()
    cfg.adam.beta1 = 0.9
    cfg.adam.beta2 = 0.999

    cfg.loss = CN()
    cfg.loss.softmax = CN()
    cfg.loss.softmax.label_smooth = True
    cfg.loss.triplet = CN()
    cfg.loss.triplet.margin = 0.3
    cfg.loss.triplet.weight_t = 1.0
    cfg.loss.triplet.weight_x = 1.0

    cfg.test = CN()
    cfg.test.batch_size = 100
    cfg.test.dist_metric = "cosine"     # Eq. 11
    cfg.test.normalize_feature = True
    cfg.test.ranks = [1, 5, 10, 20]
    cfg.test.evaluate = False           # test only
    cfg.test.eval_freq = -1
    cfg.test.start_eval = 0
    cfg.test.rerank = False
    cfg.test.visrank = False
    cfg.test.visrank_topk = 10
    cfg.test.flip = False               # add features of the flipped image (authors' release)
    cfg.test.amp = False                # mixed-precision feature extraction (bf16 CPU, fp16 CUDA)
    cfg.test.precise_bn_batches = 0     # MPN: re-estimate MT BN statistics before testing (0 = off)
    cfg.test.multi_query = "none"       # Market-1501 multi-query (Table 5): none | mean | max
    # MPN's test-time representation: mt (the paper: h, Eq. 2) | at_uniform | concat (beyond
    # the paper: the AT heads on uniform strips of F, no priors; [h, g_uniform])
    cfg.test.readout = "mt"
    # after training, also evaluate these readouts (results.json "readouts"), e.g.
    # "['mt', 'at_uniform', 'concat']"; readouts a model cannot give are left out
    cfg.test.extra_readouts = []

    add_mpn_config(cfg)
    return cfg


def check_dataset_names(cfg: CN) -> None:
    """Every name of ``data.sources`` / ``data.targets`` must be a registered torchreid dataset.

    ``opts`` placed after ``-s/-t`` (``-t synthetic_pedestrians train.max_epoch 1``) are read
    by argparse as more dataset names: they are rejected here, before anything runs.

    Raises:
        ValueError: naming the unknown names, the registered ones and the fix.
    """
    from . import compat
    registered = sorted(vars(compat.datasets)["__image_datasets"])
    for key in ("sources", "targets"):
        unknown = [n for n in cfg.data[key] if n not in registered]
        if not unknown:
            continue
        like_opts = [n for n in unknown if "." in n]
        hint = (f" {like_opts} look like config overrides read as dataset names: end the "
                f"-{key[0]} list with '--' before the overrides (`-{key[0]} "
                f"synthetic_pedestrians -- train.max_epoch 1`), or set data.{key} among the "
                "overrides." if like_opts else "")
        raise ValueError(f"data.{key} (-{key[0]}/--{key}) names datasets that are not "
                         f"registered: {unknown}.{hint} Registered datasets: "
                         f"{', '.join(registered)}")


def minimum_input_size(cfg: CN) -> int:
    """The smallest ``data.height`` / ``data.width`` that leaves a feature map F of at least
    1x1: the model's feature stride (:func:`mpn_plugin.models.feature_stride`)."""
    from .models import feature_stride
    return feature_stride(cfg)


def check_config(cfg: CN) -> CN:
    """Value checks that yacs (keys and types only) cannot do.

    Raises:
        ValueError: unregistered dataset names (:func:`check_dataset_names`);
            ``data.height`` / ``data.width`` below :func:`minimum_input_size`;
            ``data.corrupt_images`` not ``error`` / ``skip``; negative
            ``train.divergence_factor`` / ``train.checkpoint_freq`` / ``train.keep_last``;
            ``test.multi_query`` not ``none``, ``mean`` or ``max``.
    """
    from .data.image_check import CORRUPT_IMAGE_POLICIES
    from .evaluation.multi_query import POOLINGS
    check_dataset_names(cfg)
    minimum = minimum_input_size(cfg)
    if min(cfg.data.height, cfg.data.width) < minimum:
        raise ValueError(
            f"data.height={cfg.data.height} x data.width={cfg.data.width} is too small for "
            f"model '{cfg.model.name}': the backbone downsamples {minimum}x, so both must be at "
            f"least {minimum} (a feature map of at least 1x1); the configs use 128x64 to 384x128")
    if cfg.data.corrupt_images not in CORRUPT_IMAGE_POLICIES:
        raise ValueError(f"data.corrupt_images must be one of {', '.join(CORRUPT_IMAGE_POLICIES)}"
                         f" (what to do with an image that cannot be read), got "
                         f"'{cfg.data.corrupt_images}'")
    for key in ("divergence_factor", "checkpoint_freq", "keep_last"):
        if cfg.train[key] < 0:
            raise ValueError(f"train.{key} must be >= 0 (0 = off), got {cfg.train[key]}")
    from .models.mpn import READOUTS
    for key, values in (("readout", [cfg.test.readout]),
                        ("extra_readouts", cfg.test.extra_readouts)):
        bad = [v for v in values if v not in READOUTS]
        if bad:
            raise ValueError(f"test.{key}: {bad} not among {', '.join(READOUTS)} (mt = the "
                             "paper's test feature; at_uniform, concat: beyond the paper)")
    if cfg.test.multi_query not in POOLINGS:
        raise ValueError(f"test.multi_query must be one of {', '.join(POOLINGS)} (pooling of the "
                         f"Market-1501 gt_bbox/ features of each query's identity and camera), "
                         f"got '{cfg.test.multi_query}'")
    return cfg


BASE_KEY = "_BASE_"


def merge_config_file(cfg: CN, path: str) -> CN:
    """Merge a YAML file into ``cfg``; a file may name another one to start from with
    ``_BASE_: relative/or/absolute.yaml`` (merged first, recursively), as in detectron2.

    Raises:
        FileNotFoundError: naming the missing file (and the file that referred to it).
    """
    import os.path as osp

    import yaml

    if not osp.isfile(path):
        raise FileNotFoundError(f"config file '{path}' does not exist")
    with open(path, encoding="utf-8") as f:
        loaded = yaml.safe_load(f) or {}
    base = loaded.pop(BASE_KEY, None)
    if base:
        base_path = base if osp.isabs(base) else osp.join(osp.dirname(path), base)
        if not osp.isfile(base_path):
            raise FileNotFoundError(f"config '{path}' has _BASE_ '{base}', which does not exist "
                                    f"(looked at '{base_path}')")
        merge_config_file(cfg, base_path)
    cfg.merge_from_other_cfg(CN(loaded))
    return cfg


def add_mpn_config(cfg: CN) -> CN:
    """Add the ``engine`` and ``mpn`` nodes (every ablation switch of Tables 1-4, Fig. 7, 10)."""
    cfg.engine = CN()
    cfg.engine.name = "mpn"  # a key of mpn_plugin.engine.ENGINES: mpn | softmax | triplet

    cfg.mpn = CN()
    # architecture (Sec. 3.3)
    cfg.mpn.backbone = "resnet50"
    cfg.mpn.last_stride = 1
    cfg.mpn.num_parts = 6              # K (Fig. 7)
    cfg.mpn.dim = 512                  # D (paper); 128-256: cheaper heads on light trunks
    cfg.mpn.use_attention = True       # CA (MPN vs MPN°)
    cfg.mpn.attention_reduction = 4
    cfg.mpn.tasks = "mt_at"            # mt_at | mt_only | at_only (Baseline)
    # PSA (Table 1): what the MT and AT of each part share (models.SharingConfig)
    cfg.mpn.sharing = CN()
    cfg.mpn.sharing.conv1 = True       # C1-S
    cfg.mpn.sharing.conv2 = True       # C2-S
    cfg.mpn.sharing.attention = True   # CA (MPN shares it)
    # BN of shared layers: affine (shared gamma/beta, per-task running statistics: test-time
    # MT uses MT statistics; trains the same function as module) | module (one BN module,
    # authors' release: test-time MT uses MT+AT mixed statistics) | none (task-specific BN)
    cfg.mpn.sharing.batchnorm = "affine"
    cfg.mpn.prior_variant = "full"     # full | roi_resize | uniform (Table 2)
    cfg.mpn.backbone_weights = ""      # local backbone weights (torchvision/torchreid)
    cfg.mpn.init_weights = ""          # IDE checkpoint (Sec. 5.1) for the backbone
    cfg.mpn.classifier_init_std = 0.001  # N(0, std) init of the part classifiers (release: 0.001)
    cfg.mpn.classifier_neck = "none"     # none (Eq. 1) | bn: W_k BN(f_k) (BNNeck; h unchanged)
    cfg.mpn.backbone_attention = "none"  # none | rga_s: RGA-S after each stage (MPN*, Sec. 5.4.1)
    # beyond the paper (defaults = the paper): MT pooling over F max (GMP) | avg | gem;
    # feature_clip False: MobileNetV2's F without its final ReLU6 clip (a ReLU)
    cfg.mpn.mt_pooling = "max"
    cfg.mpn.feature_clip = True

    # losses (Eq. 1, 3, 8, 10; Tables 3-4; Fig. 10)
    cfg.mpn.loss = CN()
    cfg.mpn.loss.id_weight = 1.0
    cfg.mpn.loss.id_reduction = "sum"        # sum over parts (Eq. 1) | mean (beyond the paper)
    cfg.mpn.loss.label_smooth = 0.0          # 0 = plain cross-entropy as in Eq. 1
    cfg.mpn.loss.triplet_weight = 1.0
    cfg.mpn.loss.triplet_margin = 0.2        # alpha
    cfg.mpn.loss.triplet_input = "h"         # h | h_plus_g ("sample-wise [10]" of Tables 3-4)
    cfg.mpn.loss.triplet_start_epoch = 0     # warm-up: triplet term off before this epoch
    cfg.mpn.loss.alignment = "class_wise"    # class_wise | sample_wise | batch_wise | none
    cfg.mpn.loss.alignment_weight = 1.0      # lambda
    cfg.mpn.loss.alignment_start_epoch = 0   # warm-up: alignment term off before this epoch
    cfg.mpn.loss.soft_sharing_layer = ""     # "" | conv1 | conv2 (Fig. 10)
    cfg.mpn.loss.soft_sharing_weight = 0.0   # 0.01 | 0.1 | 1 | 10 in Fig. 10

    # coarse priors (Sec. 3.2) and data
    cfg.mpn.prior = CN()
    cfg.mpn.prior.cache_file = ""            # "" = <dataset dir>/priors_*.npz (the only one)
    cfg.mpn.prior.on_missing = "error"       # error | uniform (counted warning)
    cfg.mpn.prior.binarize_threshold = 0.5
    cfg.mpn.prior.offline_translation_copies = 1   # paper: 5 (training set enlarged 5x)
    cfg.mpn.prior.offline_translation_max_shift = [0.1, 0.1]  # fraction of (height, width)
    return cfg


def imagedata_kwargs(cfg: CN, use_gpu: bool) -> dict:
    """Arguments of torchreid's ``ImageDataManager``."""
    return dict(
        root=cfg.data.root, sources=cfg.data.sources, targets=cfg.data.targets,
        height=cfg.data.height, width=cfg.data.width, transforms=cfg.data.transforms,
        k_tfm=cfg.data.k_tfm, norm_mean=cfg.data.norm_mean, norm_std=cfg.data.norm_std,
        use_gpu=use_gpu, split_id=cfg.data.split_id, combineall=cfg.data.combineall,
        load_train_targets=cfg.data.load_train_targets, batch_size_train=cfg.train.batch_size,
        batch_size_test=cfg.test.batch_size, workers=cfg.data.workers,
        num_instances=cfg.sampler.num_instances, num_cams=cfg.sampler.num_cams,
        num_datasets=cfg.sampler.num_datasets, train_sampler=cfg.sampler.train_sampler,
        train_sampler_t=cfg.sampler.train_sampler_t, cuhk03_labeled=cfg.cuhk03.labeled_images,
        cuhk03_classic_split=cfg.cuhk03.classic_split,
        market1501_500k=cfg.market1501.use_500k_distractors)


def optimizer_kwargs(cfg: CN) -> dict:
    """Arguments of torchreid's ``build_optimizer``."""
    return dict(
        optim=cfg.train.optim, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        momentum=cfg.sgd.momentum, sgd_dampening=cfg.sgd.dampening,
        sgd_nesterov=cfg.sgd.nesterov, rmsprop_alpha=cfg.rmsprop.alpha,
        adam_beta1=cfg.adam.beta1, adam_beta2=cfg.adam.beta2, staged_lr=cfg.train.staged_lr,
        new_layers=cfg.train.new_layers, base_lr_mult=cfg.train.base_lr_mult)


def lr_scheduler_kwargs(cfg: CN) -> dict:
    """Arguments of torchreid's ``build_lr_scheduler``."""
    return dict(lr_scheduler=cfg.train.lr_scheduler, stepsize=cfg.train.stepsize,
                gamma=cfg.train.gamma, max_epoch=cfg.train.max_epoch)


def engine_run_kwargs(cfg: CN) -> dict:
    """Arguments of torchreid's ``Engine.run``."""
    return dict(
        save_dir=cfg.data.save_dir, max_epoch=cfg.train.max_epoch,
        start_epoch=cfg.train.start_epoch, fixbase_epoch=cfg.train.fixbase_epoch,
        open_layers=cfg.train.open_layers, start_eval=cfg.test.start_eval,
        eval_freq=cfg.test.eval_freq, test_only=cfg.test.evaluate,
        print_freq=cfg.train.print_freq, dist_metric=cfg.test.dist_metric,
        normalize_feature=cfg.test.normalize_feature, visrank=cfg.test.visrank,
        visrank_topk=cfg.test.visrank_topk, use_metric_cuhk03=cfg.cuhk03.use_metric_cuhk03,
        ranks=cfg.test.ranks, rerank=cfg.test.rerank)
