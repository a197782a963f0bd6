"""MPN's total training loss, Eq. 10: L = L_ID + L_TRI + lambda * L_CF, with its weights and
switches (:class:`MPNLossConfig`: the variants of Tables 3-4 and Fig. 10)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Tuple

import torch

from .alignment import build_alignment_loss, soft_sharing_penalty, triplet_features
from .id_loss import part_id_loss
from .triplet import cosine_batch_hard_triplet_loss


@dataclass
class MPNLossConfig:
    """Weights and switches of Eq. 10 (and the variants of Tables 3-4, Fig. 10).

    Attributes:
        id_weight (float): weight of L_ID (Eq. 1).
        id_reduction (str): ``sum`` over the K parts (Eq. 1) or ``mean`` (beyond the paper).
        label_smooth (float): label smoothing of the cross-entropy (0 = Eq. 1 as printed).
        triplet_weight (float): weight of L_TRI (Eq. 3).
        triplet_margin (float): alpha.
        triplet_input (str): ``h`` (paper) or ``h_plus_g`` (the sample-wise variant of [10]).
        triplet_start_epoch (int): the triplet term is off before this epoch (a warm-up for
            training from scratch; 0 = always on as in the paper).
        alignment (str): ``class_wise`` (Eq. 8), ``sample_wise`` (Eq. 9), ``batch_wise`` or
            ``none``.
        alignment_weight (float): lambda.
        alignment_start_epoch (int): the alignment term is off before this epoch (0 = always
            on as in the paper, which starts from an IDE model; from ImageNet weights the ID
            losses first need to leave chance, else L_CF is met by features that hardly depend
            on the image: docs/RESULTS.md, real crops).
        soft_sharing_layer (str): ``''``, ``conv1`` or ``conv2`` (Fig. 10).
        soft_sharing_weight (float): weight of the L2 penalty between MT and AT parameters.
    """
    id_weight: float = 1.0
    id_reduction: str = "sum"
    label_smooth: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.2
    triplet_input: str = "h"
    triplet_start_epoch: int = 0
    alignment: str = "class_wise"
    alignment_weight: float = 1.0
    alignment_start_epoch: int = 0
    soft_sharing_layer: str = ""
    soft_sharing_weight: float = 0.0

    @classmethod
    def from_cfg(cls, cfg) -> "MPNLossConfig":
        """The ``cfg.mpn.loss`` node of a config."""
        return cls(**{k: cfg.mpn.loss[k] for k in cls.__dataclass_fields__})


def mpn_loss_terms(out: Dict[str, Optional[torch.Tensor]], pids: torch.Tensor,
                   config: Optional[MPNLossConfig] = None, epoch: int = 0,
                   soft_sharing_pairs: Optional[Iterable[Tuple[torch.Tensor, torch.Tensor]]] = None
                   ) -> Dict[str, torch.Tensor]:
    """Every term of Eq. 10 that applies to the model's tasks, weighted, by name; the total
    loss is their sum (in this order).

    Terms: ``loss_id_mt``, ``loss_id_at`` (Eq. 1 per task), ``loss_tri`` (Eq. 3 on h; the
    Baseline, which has only g, on g: Sec. 5.2.1), ``loss_cf`` (lambda x the alignment of
    Eq. 8 or a variant, when the model has both h and g) and ``loss_soft`` (Fig. 10).

    Args:
        out (dict): MPN's training output: ``mt_logits``, ``at_logits`` (K, B, C), ``h``,
            ``g`` (B, d); the entries a model's tasks do not give are None.
        pids (Tensor): (B,) identity labels.
        config (MPNLossConfig, optional): weights and switches (default: the paper's Eq. 10).
        epoch (int): the current (0-based) epoch, for ``triplet_start_epoch`` and
            ``alignment_start_epoch``.
        soft_sharing_pairs (iterable, optional): the (MT, AT) parameter pairs of
            ``config.soft_sharing_layer`` (``MPN.soft_sharing_pairs``); needed only when that
            layer is set with a positive weight.

    Returns:
        dict: term name -> weighted scalar tensor.

    Examples::

        >>> out = model(imgs, prior_mask=mask, prior_roi=roi)       # MPN in training mode
        >>> terms = mpn_loss_terms(out, pids, MPNLossConfig(alignment_weight=0.5))
        >>> loss = sum(terms.values())                              # Eq. 10
    """
    c = config if config is not None else MPNLossConfig()
    terms: Dict[str, torch.Tensor] = {}
    h, g = out["h"], out["g"]
    if c.id_weight > 0:
        if out["mt_logits"] is not None:
            terms["loss_id_mt"] = c.id_weight * part_id_loss(
                out["mt_logits"], pids, c.label_smooth, c.id_reduction)
        if out["at_logits"] is not None:
            terms["loss_id_at"] = c.id_weight * part_id_loss(
                out["at_logits"], pids, c.label_smooth, c.id_reduction)
    if c.triplet_weight > 0 and epoch >= c.triplet_start_epoch:
        feats = g if h is None else (triplet_features(h, g, c.triplet_input)
                                     if g is not None else h)
        terms["loss_tri"] = c.triplet_weight * cosine_batch_hard_triplet_loss(
            feats, pids, c.triplet_margin)
    if (c.alignment_weight > 0 and c.alignment != "none" and h is not None and g is not None
            and epoch >= c.alignment_start_epoch):
        terms["loss_cf"] = c.alignment_weight * build_alignment_loss(c.alignment)(h, g, pids)
    if c.soft_sharing_layer and c.soft_sharing_weight > 0:
        if soft_sharing_pairs is None:
            raise ValueError(f"mpn.loss.soft_sharing_layer '{c.soft_sharing_layer}' needs the "
                             "model's (MT, AT) parameter pairs: pass soft_sharing_pairs="
                             f"model.soft_sharing_pairs('{c.soft_sharing_layer}')")
        terms["loss_soft"] = soft_sharing_penalty(soft_sharing_pairs, c.soft_sharing_weight)
    return terms
