"""MPN: Multi-task Part-aware Network (Ding et al., TPAMI 2020), Fig. 3.

Training: a backbone gives F; for each of K parts a main task (MT, head k on the whole F) and an
auxiliary task (AT, the same head k on the part map P_k cut from F with the coarse prior,
Fig. 5b); separate classifiers W_k^mt, W_k^at (the only unshared parameters under full PSA).
Inference (Sec. 4): ATs are not run; the image representation is h = [f_1, ..., f_K] (Eq. 2),
compared with cosine similarity (Eq. 11).

Every ablation of Tables 1-2 and Fig. 10 is a constructor option (see :class:`MPNConfig`):

========================  ====================================================================
Table 1 row               options
========================  ====================================================================
Baseline                  tasks='at_only', prior_variant='uniform'
MT Only                   tasks='mt_only'
Naive MTL                 sharing all False (and no CF loss in the engine)
C1-S / C2-S / C1-S+C2-S   sharing.conv1 / sharing.conv2 / both
FSA alone                 sharing all False + class-wise CF loss
MPN° (``mpn_o``)          sharing conv1+conv2, use_attention=False, CF loss
MPN (``mpn``)             sharing conv1+conv2+CA, use_attention=True, CF loss
========================  ====================================================================

MPN* (``mpn_star``, Table 5, Sec. 5.4.1) is MPN with ``backbone_attention='rga_s'``: RGA-S
(:mod:`~mpn_plugin.models.rga`) after each backbone stage, built for ``input_size``. The RGA-S
modules are the model's top-level child ``backbone_attention`` (None for the other variants),
not part of ``backbone``: they start from random weights, so torchreid's ``staged_lr`` and
``fixbase_epoch``/``open_layers``, which split the model by its top-level names, treat them as
new layers with the heads (``train.new_layers``, ``train.open_layers``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .backbones import build_backbone
from .part_head import (
    POOLINGS,
    GroupedBatchNorm,
    GroupedLinear,
    PartHeads,
    SharingConfig,
    build_task_heads,
)
from .part_maps import PRIOR_VARIANTS, part_feature_maps
from .rga import BACKBONE_ATTENTIONS, StageAttention

TASKS = ("mt_at", "mt_only", "at_only")
CLASSIFIER_NECKS = ("none", "bn")
#: test-time representations (``test.readout``): ``mt`` is the paper's (Sec. 4, Eq. 2: h, the
#: MT features; the Baseline's g); ``at_uniform`` (the AT heads on uniform strips of F, no
#: priors needed) and ``concat`` ([h, g_uniform]) are options beyond the paper
READOUTS = ("mt", "at_uniform", "concat")


def readout_features(feature_map: torch.Tensor, main_heads: Optional[PartHeads],
                     auxiliary_heads: Optional[PartHeads], num_parts: int,
                     readout: str = "mt") -> torch.Tensor:
    """The test-time representation of MPN from F (Sec. 4), read by :func:`inference_features`
    (MPN's eval forward, the engine's evaluation, the ONNX export).

    Args:
        feature_map (Tensor): F, (B, C, H, W).
        main_heads / auxiliary_heads (PartHeads or None): the model's MT / AT heads.
        num_parts (int): K.
        readout (str): ``mt`` (paper): h = [f_1..f_K] (Eq. 2), or the Baseline's g (ATs on
            uniform strips, Sec. 5.2.1) when there are no MT heads; ``at_uniform``: g read
            by the AT heads on uniform strips (no priors); ``concat``: [h, g_uniform].

    Returns:
        Tensor: (B, K*D) (``concat``: (B, 2*K*D)).
    """
    if readout not in READOUTS:
        raise ValueError(f"test.readout '{readout}' is not one of {READOUTS}")

    def uniform_g():
        if auxiliary_heads is None:
            raise ValueError(f"test.readout '{readout}' reads the AT heads, which this model "
                             "has not (mpn.tasks mt_only): use test.readout mt")
        parts = part_feature_maps(feature_map, num_parts, variant="uniform")
        return auxiliary_heads.forward_parts(parts).flatten(1)             # g: (B, K*D)

    if readout == "at_uniform" or main_heads is None:
        if main_heads is None and readout == "concat":
            raise ValueError("test.readout 'concat' needs MT and AT heads; the Baseline "
                             "(mpn.tasks at_only) has only g: use test.readout mt")
        return uniform_g()
    h = main_heads.forward_whole(feature_map).flatten(1)                   # h (Eq. 2)
    return h if readout == "mt" else torch.cat([h, uniform_g()], dim=1)


#: what the test-time forward reads of an MPN: ``backbone(x, backbone_attention)`` gives F,
#: then :func:`readout_features` with these heads, ``num_parts`` and ``readout`` (an
#: :class:`MPN`, or the test-time parts of one: :class:`mpn_plugin.export.InferenceModel`)
TEST_TIME_PARTS = ("backbone", "backbone_attention", "main_heads", "auxiliary_heads",
                   "num_parts", "readout")


def inference_features(model, images: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """The one test-time forward (Sec. 4), of MPN and of torchreid's models: the
    representation that the engine's evaluation, the feature extractor and the ONNX export
    compare.

    An :class:`MPN` in eval mode (or anything holding its :data:`TEST_TIME_PARTS`, such as
    :class:`mpn_plugin.export.InferenceModel`) runs its backbone for F and
    :func:`readout_features` (h = [f_1..f_K], Eq. 2, or ``test.readout``); any other model
    (torchreid's) its own eval forward, ``model(images)``. With ``flip`` (``test.flip``, the
    authors' release), the features of the horizontally flipped images are added, each cast to
    float32 first (under autocast the two halves are summed in float32).

    Args:
        model (nn.Module or callable): an MPN (or its test-time parts) or a torchreid model,
            in eval mode.
        images (Tensor): (B, 3, H, W), normalised as for training.
        flip (bool): add the features of ``torch.flip(images, dims=[3])``.

    Returns:
        Tensor: (B, d) features, not normalised (float32 with ``flip``; else the model's dtype).

    Examples::

        >>> model = build_mpn(10, backbone='resnet18').eval()
        >>> inference_features(model, torch.zeros(2, 3, 256, 128), flip=True).shape
        torch.Size([2, 3072])
    """
    if all(hasattr(model, name) for name in TEST_TIME_PARTS):
        def forward(x):
            feature_map = model.backbone(x, model.backbone_attention)       # F: (B, C, H, W)
            return readout_features(feature_map, model.main_heads, model.auxiliary_heads,
                                    model.num_parts, model.readout)
    else:
        forward = model
    features = forward(images)
    if flip:
        features = features.float() + forward(torch.flip(images, dims=[3])).float()
    return features


@dataclass
class MPNConfig:
    """Hyper-parameters of :class:`MPN`; defaults reproduce the paper's MPN (Sec. 3.3, 5.1).

    Attributes:
        backbone (str): torchreid backbone name (``resnet50`` in the paper).
        last_stride (int): ResNet layer4 stride (1: F is 24x8 at 384x128).
        num_parts (int): K.
        dim (int): channels of both 1x1 convs, D (512: the paper's, for 2048-channel
            ResNet-50). A smaller D is the cheaper head option for light trunks (on
            MobileNetV2 the K first convs cost more than the trunk at D = 512): MPN°
            keeps the Baseline's test-time parameters at any D (docs/RESULTS.md).
        use_attention (bool): channel attention (CA) after GMP (MPN: True, MPN°: False).
        attention_reduction (int): CA reduction rate (4 in the authors' release).
        tasks (str): ``mt_at`` (MTL), ``mt_only`` (MT Only) or ``at_only`` (Baseline).
        sharing (SharingConfig): PSA switches.
        prior_variant (str): ``full``, ``roi_resize`` or ``uniform`` (Table 2).
        backbone_weights (str): optional local weights for the backbone (e.g. the IDE model).
        classifier_neck (str): ``none`` (Eq. 1: W_k f_k) or ``bn``: a BatchNorm (no ReLU) of
            each part feature before its classifier, W_k BN(f_k) (the "BNNeck" of Luo et al.,
            CVPRW 2019). Only the classifiers' input changes: h, g, the triplet and the
            alignment losses and the test-time representation stay the paper's. It centres the
            non-negative f_k (they end in a ReLU): with identity-balanced batches, where each
            identity's images come in few batches per epoch, the common mean of the features
            otherwise raises the logits of the last-seen classes for every image and the ID
            losses stay at (or above) chance (docs/RESULTS.md, real crops).
        classifier_init_std (float): std of the N(0, std) init of W_k^mt, W_k^at (Eq. 1); 0.001 in
            the authors' release, 0.01 in torchreid's models.
        pretrained (bool): start the backbone from ImageNet weights (Sec. 5.1 starts the IDE
            model from ImageNet ResNet-50); see :func:`~mpn_plugin.models.backbones.build_backbone`.
        backbone_attention (str): ``none`` (MPN) or ``rga_s`` (MPN*: RGA-S after each backbone
            stage, Sec. 5.4.1; the model's ``backbone_attention`` module).
        mt_pooling (str): the MT heads' pooling over F: ``max`` (GMP, the paper), or beyond the
            paper ``avg`` / ``gem`` (GeM, p = 3); the AT heads always use GMP.
        feature_clip (bool): True (the backbone as published). False, beyond the paper, for
            ``mobilenetv2`` only: its final ReLU6 becomes a ReLU, so F is not clipped at 6
            (a position saturated at 6 passes no gradient to the trunk).
        readout (str): the test-time representation (:data:`READOUTS`): ``mt`` (the paper).
        input_size (tuple): (height, width) of the input images (384x128 in Sec. 5.1); the
            RGA-S modules are built for it (``data.height``/``data.width`` in the configs).
    """
    backbone: str = "resnet50"
    last_stride: int = 1
    num_parts: int = 6
    dim: int = 512
    use_attention: bool = True
    attention_reduction: int = 4
    tasks: str = "mt_at"
    sharing: SharingConfig = field(default_factory=SharingConfig)
    prior_variant: str = "full"
    backbone_weights: str = ""
    classifier_neck: str = "none"
    classifier_init_std: float = 1e-3
    pretrained: bool = False
    backbone_attention: str = "none"
    input_size: Tuple[int, int] = (384, 128)
    mt_pooling: str = "max"
    feature_clip: bool = True
    readout: str = "mt"

    def __post_init__(self):
        if isinstance(self.sharing, dict):
            self.sharing = SharingConfig(**self.sharing)
        if self.tasks not in TASKS:
            raise ValueError(f"mpn tasks='{self.tasks}' is not one of {TASKS}")
        if self.prior_variant not in PRIOR_VARIANTS:
            raise ValueError(f"mpn prior_variant='{self.prior_variant}' is not one of "
                             f"{PRIOR_VARIANTS}")
        if self.classifier_neck not in CLASSIFIER_NECKS:
            raise ValueError(f"mpn classifier_neck='{self.classifier_neck}' is not one of "
                             f"{CLASSIFIER_NECKS}")
        if self.num_parts < 1:
            raise ValueError(f"mpn num_parts must be >= 1, got {self.num_parts}")
        if self.dim < 1:
            raise ValueError(f"mpn.dim (D, channels of the heads' 1x1 convs) must be >= 1, got "
                             f"{self.dim}; the paper uses 512 (ResNet-50), 128-256 cut the "
                             f"heads' cost on light trunks (docs/RESULTS.md)")
        if self.use_attention and self.dim // self.attention_reduction < 1:
            raise ValueError(f"mpn.attention_reduction={self.attention_reduction} leaves no "
                             f"channel in the CA of mpn.dim={self.dim}: use a reduction <= "
                             f"mpn.dim (4 in the authors' release)")
        if self.mt_pooling not in POOLINGS:
            raise ValueError(f"mpn.mt_pooling='{self.mt_pooling}' is not one of {POOLINGS} "
                             "(max = the paper's GMP)")
        if self.readout not in READOUTS:
            raise ValueError(f"test.readout='{self.readout}' is not one of {READOUTS} "
                             "(mt = the paper's test feature)")
        if self.readout != "mt" and self.tasks == "mt_only":
            raise ValueError(f"test.readout='{self.readout}' reads the AT heads; mpn.tasks "
                             "mt_only has none: use test.readout mt")
        if self.readout == "concat" and self.tasks == "at_only":
            raise ValueError("test.readout='concat' needs MT and AT heads; the Baseline "
                             "(mpn.tasks at_only) has only g: use test.readout mt")
        if not self.feature_clip and self.backbone != "mobilenetv2":
            raise ValueError(f"mpn.feature_clip False removes MobileNetV2's final ReLU6 clip; "
                             f"backbone '{self.backbone}' has no clip: leave mpn.feature_clip "
                             "True")
        if self.backbone_attention not in BACKBONE_ATTENTIONS:
            raise ValueError(f"mpn backbone_attention='{self.backbone_attention}' is not one of "
                             f"{BACKBONE_ATTENTIONS}")

    @classmethod
    def from_cfg(cls, cfg) -> "MPNConfig":
        """The MPN of a config: the ``cfg.mpn`` node (``cfg.mpn.sharing`` is
        :class:`SharingConfig`), then the fields that ``model.name`` fixes
        (:func:`model_name_fields`), the input size (``data.height``, ``data.width``: MPN*'s
        RGA-S modules are built for it), ``model.pretrained`` and ``test.readout``.

        Args:
            cfg (CfgNode): a config of :func:`mpn_plugin.config.get_default_config` whose
                ``model.name`` is an MPN-family name (:data:`MODEL_NAMES`).

        Examples::

            >>> cfg = get_default_config()
            >>> cfg.model.name = 'mpn_o_mobilenetv2'
            >>> MPNConfig.from_cfg(cfg).backbone, MPNConfig.from_cfg(cfg).use_attention
            ('mobilenetv2', False)
        """
        m = cfg.mpn
        fields = {k: m[k] for k in cls.__dataclass_fields__ if k in m and k != "sharing"}
        fields.update(sharing=SharingConfig(**m.sharing),
                      input_size=(cfg.data.height, cfg.data.width),
                      pretrained=bool(cfg.model.pretrained), readout=cfg.test.readout)
        fields.update(model_name_fields(cfg.model.name))
        return cls(**fields)


NO_SHARING = dict(conv1=False, conv2=False, attention=False)

#: variant name -> the MPNConfig fields it fixes (``mpn``: none, MPNConfig's defaults are MPN)
VARIANTS: Dict[str, Dict[str, Any]] = {
    "mpn": dict(),
    "mpn_o": dict(use_attention=False),
    "mpn_baseline": dict(tasks="at_only", prior_variant="uniform", use_attention=False),
    "mpn_mt_only": dict(tasks="mt_only", use_attention=False),
    "mpn_naive_mtl": dict(use_attention=False, sharing=SharingConfig(**NO_SHARING)),
    "mpn_star": dict(use_attention=True, backbone_attention="rga_s"),
}

#: factory-name suffix -> backbone it fixes (``mpn_mobilenetv2`` = ``mpn`` on MobileNetV2)
BACKBONE_SUFFIXES = {"_mobilenetv2": "mobilenetv2"}

#: every MPN-family factory name -> (variant, backbone fixed by the name or None)
MODEL_NAMES = {name: (name, None) for name in VARIANTS}
MODEL_NAMES.update({variant + suffix: (variant, backbone) for variant in VARIANTS
                    for suffix, backbone in BACKBONE_SUFFIXES.items()})


def is_mpn_model(name: str) -> bool:
    """Whether ``name`` is an MPN-family model name (:data:`MODEL_NAMES`), built from
    :class:`MPNConfig`; other names are torchreid's own models."""
    return name in MODEL_NAMES


def model_name_fields(name: str) -> Dict[str, Any]:
    """The :class:`MPNConfig` fields that an MPN-family name fixes: its variant's
    (:data:`VARIANTS`) and the backbone of its suffix (:data:`BACKBONE_SUFFIXES`). The one
    name -> model resolution, read by :meth:`MPNConfig.from_cfg` (the name's fields win over
    ``cfg.mpn``) and by :func:`~mpn_plugin.models.build_mpn` (explicit keyword overrides win
    over the name's fields).

    Args:
        name (str): a key of :data:`MODEL_NAMES` (e.g. ``mpn_baseline_mobilenetv2``).

    Raises:
        ValueError: naming the MPN-family names, if ``name`` is not one.

    Examples::

        >>> model_name_fields('mpn_o_mobilenetv2')
        {'use_attention': False, 'backbone': 'mobilenetv2'}
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown MPN variant '{name}'; choose one of {sorted(MODEL_NAMES)}")
    variant, backbone = MODEL_NAMES[name]
    fields = dict(VARIANTS[variant])
    if backbone:
        fields["backbone"] = backbone
    return fields


class MPN(nn.Module):
    """Multi-task Part-aware Network (Fig. 3).

    Args:
        num_classes (int): training identities.
        config (MPNConfig): architecture and ablation switches.
        loss (str): torchreid's loss name (kept for factory compatibility; the MPN engine
            decides which loss terms are used).

    Attributes:
        backbone (Backbone): the trunk giving F.
        backbone_attention (StageAttention or None): MPN*'s RGA-S modules, run by the backbone
            after each stage end (``backbone(x, backbone_attention)``); None unless
            ``config.backbone_attention='rga_s'``.

    Forward:
        * eval: ``model(x)`` -> h (B, K*D) (Baseline: g); ``return_featuremaps=True`` -> F.
        * train: ``model(x, prior_mask, prior_roi)`` -> dict with ``mt_logits``/``at_logits``
          (K, B, num_classes), ``h``/``g`` (B, K*D), ``mt_features``/``at_features`` (B, K, D);
          entries of an absent task are None.

    Examples::

        >>> model = MPN(num_classes=10, config=MPNConfig(backbone='resnet18'))
        >>> model.eval()(torch.zeros(2, 3, 256, 128)).shape
        torch.Size([2, 3072])
    """

    def __init__(self, num_classes: int, config: Optional[MPNConfig] = None, loss: str = "triplet",
                 **overrides):
        super().__init__()
        config = dataclasses.replace(config or MPNConfig(), **overrides)
        self.config = config
        self.loss = loss
        self.num_classes = num_classes
        self.backbone = build_backbone(config.backbone, config.last_stride,
                                       pretrained=config.pretrained,
                                       weights=config.backbone_weights,
                                       feature_clip=config.feature_clip)
        # MPN* (Sec. 5.4.1): RGA-S after each stage end; a top-level child, so staged_lr and
        # open_layers see it as a new layer (always set: torchreid checks open_layers by hasattr)
        self.backbone_attention: Optional[StageAttention] = None
        if config.backbone_attention == "rga_s":
            if not self.backbone.stage_ends:
                raise ValueError(
                    f"mpn.backbone_attention='rga_s' (MPN*) needs a backbone with four stages "
                    f"(resnet*, mobilenetv2), got '{config.backbone}': set mpn.backbone "
                    f"resnet50 (or mobilenetv2), or mpn.backbone_attention none")
            self.backbone_attention = StageAttention(self.backbone.body, self.backbone.stage_ends,
                                                     config.input_size)
        K, D = config.num_parts, config.dim
        self.main_heads, self.auxiliary_heads = build_task_heads(
            K, self.backbone.out_channels, D, config.use_attention, config.attention_reduction,
            config.sharing, with_main=config.tasks != "at_only",
            with_auxiliary=config.tasks != "mt_only", main_pooling=config.mt_pooling)
        # W_k^mt and W_k^at (Eq. 1): N(0, classifier_init_std) init, bias 0; optional neck.
        std, neck = config.classifier_init_std, config.classifier_neck == "bn"
        has_mt, has_at = self.main_heads is not None, self.auxiliary_heads is not None
        self.main_classifier = (GroupedLinear(K, D, num_classes, bias=True, init_std=std)
                                if has_mt else None)
        self.auxiliary_classifier = (GroupedLinear(K, D, num_classes, bias=True, init_std=std)
                                     if has_at else None)
        self.main_neck = GroupedBatchNorm(K, D) if neck and has_mt else None
        self.auxiliary_neck = GroupedBatchNorm(K, D) if neck and has_at else None

    # ------------------------------------------------------------------ tasks
    @property
    def num_parts(self) -> int:
        return self.config.num_parts

    @property
    def feature_dim(self) -> int:
        """Dimension of the test-time representation: K * D (``concat`` readout: 2 * K * D)."""
        parts = 2 if self.config.readout == "concat" else 1
        return parts * self.config.num_parts * self.config.dim

    @property
    def readout(self) -> str:
        """The test-time representation (``test.readout``, :data:`READOUTS`)."""
        return self.config.readout

    @readout.setter
    def readout(self, value: str) -> None:
        self.config = dataclasses.replace(self.config, readout=value)   # validated there

    def main_task(self, feature_map: torch.Tensor) -> torch.Tensor:
        """f_1..f_K: every head on the whole F. (B, C, H, W) -> (B, K, D)."""
        return self.main_heads.forward_whole(feature_map)

    def auxiliary_task(self, feature_map: torch.Tensor, prior_mask: Optional[torch.Tensor] = None,
                       prior_roi: Optional[torch.Tensor] = None) -> torch.Tensor:
        """z_1..z_K: head k on P_k (Fig. 5b). (B, C, H, W) -> (B, K, D)."""
        parts = part_feature_maps(feature_map, self.num_parts, prior_mask, prior_roi,
                                  self.config.prior_variant)
        return self.auxiliary_heads.forward_parts(parts)

    def main_logits(self, f: torch.Tensor) -> torch.Tensor:
        """W_k^mt f_k for every part (Eq. 1; through the neck if any):
        (B, K, D) -> (K, B, classes)."""
        if self.main_neck is not None:
            f = self.main_neck(f)
        return self.main_classifier(f).transpose(0, 1)

    def auxiliary_logits(self, z: torch.Tensor) -> torch.Tensor:
        """W_k^at z_k for every part (Eq. 1): (B, K, D) -> (K, B, classes)."""
        if self.auxiliary_neck is not None:
            z = self.auxiliary_neck(z)
        return self.auxiliary_classifier(z).transpose(0, 1)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, prior_mask: Optional[torch.Tensor] = None,
                prior_roi: Optional[torch.Tensor] = None, return_featuremaps: bool = False):
        if not self.training and not return_featuremaps:
            # Sec. 4: ATs removed (h, Eq. 2); the Baseline keeps its ATs on uniform division
            # (g, Sec. 5.2.1); other readouts (beyond the paper) by test.readout
            return inference_features(self, x)
        feature_map = self.backbone(x, self.backbone_attention)     # F: (B, C, H, W)
        if return_featuremaps:
            return feature_map
        out: Dict[str, Optional[torch.Tensor]] = dict.fromkeys(
            ("mt_features", "at_features", "mt_logits", "at_logits", "h", "g"))
        if self.main_heads is not None:
            f = self.main_task(feature_map)                         # (B, K, D)
            out.update(mt_features=f, h=f.flatten(1), mt_logits=self.main_logits(f))
        if self.auxiliary_heads is not None:
            z = self.auxiliary_task(feature_map, prior_mask, prior_roi)
            out.update(at_features=z, g=z.flatten(1), at_logits=self.auxiliary_logits(z))
        return out

    # ------------------------------------------------------------------ helpers
    def soft_sharing_pairs(self, layer: str) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """(MT, AT) parameter pairs of one unshared conv layer ('conv1' or 'conv2'), for the
        soft parameter sharing penalty of Fig. 10 / Sec. 5.3.2."""
        if self.main_heads is None or self.auxiliary_heads is None:
            raise ValueError("soft parameter sharing needs both tasks (tasks='mt_at')")
        attr = {"conv1": "first", "conv2": "second"}.get(layer)
        if attr is None:
            raise ValueError(f"soft sharing layer must be 'conv1' or 'conv2', got '{layer}'")
        mt, at = getattr(self.main_heads, attr).conv, getattr(self.auxiliary_heads, attr).conv
        if mt is at:
            raise ValueError(f"{layer} is hard-shared (mpn.sharing.{layer}=True); soft sharing "
                             "needs it unshared")
        return [(mt.weight, at.weight)]

    def classifier_parameters(self) -> List[nn.Parameter]:
        """Parameters of the classification layers (excluded from the paper's counts)."""
        return [p for m in (self.main_classifier, self.auxiliary_classifier, self.main_neck,
                            self.auxiliary_neck) if m is not None for p in m.parameters()]

    def test_time_modules(self) -> List[nn.Module]:
        """Modules that run at inference: backbone, MT heads (Baseline: AT heads), then MPN*'s
        RGA-S modules if any."""
        heads = self.main_heads if self.main_heads is not None else self.auxiliary_heads
        extra = [self.backbone_attention] if self.backbone_attention is not None else []
        return [self.backbone, heads] + extra

    def init_weights(self, path: str) -> None:
        """Initialise the backbone from an IDE checkpoint (Sec. 5.1: a ResNet trained with
        softmax by torchreid on the same dataset)."""
        self.backbone.load_weights(path)


def count_parameters(modules) -> int:
    """Number of distinct parameter elements in ``modules`` (shared tensors counted once)."""
    seen, total = set(), 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total
