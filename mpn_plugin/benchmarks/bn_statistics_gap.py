"""How far the test-time BN statistics of MPN's heads are from the main task's own (Sec. 4).

For each trained model (``NAME=CONFIG:CHECKPOINT``), on the query + gallery images of the
config's first target dataset:

* ``h`` in eval mode (running statistics, what evaluation uses) and ``h`` with the heads' BNs
  normalising with the batch statistics of those MT inputs (all images in one batch, backbone in
  eval mode): the Spearman rank correlation of their pairwise cosine distances (1 = the
  running statistics rank like MT's own);
* per BN of the test-time heads: the mean over channels of ``|running mean - MT mean| /
  MT std`` and of ``|log(running var / MT var)|``;
* Rank-1 / mAP with the running statistics and with statistics re-estimated from MT inputs
  of training batches (``--precise-bn-batches``, the ``test.precise_bn_batches`` remedy).

Examples::

    python tools/check_bn_statistics.py \
        --model MPN=configs/cuhk01/mpn_mobilenetv2.yaml:log/cuhk01/mpn/model/model.pth.tar-12 \
        --out docs/bn_statistics.md
"""
from __future__ import annotations

import argparse
import copy
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as Fn
from scipy.stats import spearmanr

from .. import compat
from ..build import load_model_spec
from ..config import imagedata_kwargs
from ..data import PriorOptions, register_prior_datasets
from ..engine.bn_statistics import recompute_main_task_bn_statistics
from ..evaluation import evaluate_features
from ..models import feature_stride


def head_bns(model):
    """(name, BN) of every BatchNorm of the model's test-time heads, in module order."""
    heads = model.test_time_modules()[1]
    return [(name, m) for name, m in heads.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def batch_statistics_features(model, images):
    """h with every test-time head BN normalising with the batch statistics of ``images``
    (one batch), and those statistics per BN."""
    m = copy.deepcopy(model).eval()
    heads = m.test_time_modules()[1]
    heads.fast_kernels = False            # plain BN modules, so the hooks see their inputs
    stats = {}
    hooks = []
    for name, bn in head_bns(m):
        bn.train()
        bn.momentum = 0.0                  # keep the copy's running statistics as they are

        def grab(module, inputs, name=name):
            x = inputs[0].reshape(inputs[0].shape[0], module.num_features, -1)  # (B, C, L)
            stats[name] = (x.mean((0, 2)), x.var((0, 2), unbiased=False))
        hooks.append(bn.register_forward_pre_hook(grab))
    F = m.backbone(images, m.backbone_attention)
    h = (m.main_task(F) if m.main_heads is not None else m.auxiliary_task(F)).flatten(1)
    for hk in hooks:
        hk.remove()
    return h, stats


def pairwise_cosine(x):
    """The cosine distances of every pair of rows of ``x`` (upper triangle, as a vector)."""
    x = Fn.normalize(x, dim=1)
    d = 1 - x @ x.t()
    iu = np.triu_indices(len(x), 1)
    return d.numpy()[iu]


def collect(loader):
    """(images, pids, camids) of a whole torchreid test loader."""
    imgs, pids, cams = [], [], []
    for d in loader:
        imgs.append(d["img"])
        pids.append(d["pid"].numpy())
        cams.append(d["camid"].numpy())
    return torch.cat(imgs), np.concatenate(pids), np.concatenate(cams)


@torch.no_grad()
def evaluate(model, q, g):
    """(Rank-1, mAP) of the model in eval mode, query ``q`` against gallery ``g``
    (:func:`collect` triples), cosine distance."""
    model.eval()
    qf, gf = model(q[0]), model(g[0])
    cmc, mAP = evaluate_features(qf, gf, q[1], g[1], q[2], g[2], "cosine", 50)
    return float(cmc[0]), float(mAP)


def check(name, model, cfg, precise_bn_batches):
    """The row of one model (see the module docstring): ``rho`` (Spearman of eval-mode
    against MT-batch-statistics distances), ``rank1``, ``mAP``, ``layers`` (name, mean
    shift, log variance ratio per head BN) and, with ``precise_bn_batches``, ``precise``
    (Rank-1, mAP) and ``rho_precise`` after re-estimating the statistics from that many
    training batches."""
    register_prior_datasets(PriorOptions.from_cfg(cfg, enabled=False,
                                                 feature_stride=feature_stride(cfg)))
    dm = compat.data.ImageDataManager(**dict(imagedata_kwargs(cfg, False),
                                             train_sampler="RandomSampler"))
    target = cfg.data.targets[0]
    q, g = collect(dm.test_loader[target]["query"]), collect(dm.test_loader[target]["gallery"])
    images = torch.cat([q[0], g[0]])
    with torch.no_grad():
        h_eval = model.eval()(images)
    h_batch, stats = batch_statistics_features(model, images)
    rho = spearmanr(pairwise_cosine(h_eval), pairwise_cosine(h_batch)).statistic
    layers = []
    for lname, bn in head_bns(model):
        mu, var = stats[lname]
        shift = ((bn.running_mean - mu).abs() / (var + bn.eps).sqrt()).mean().item()
        ratio = (bn.running_var + bn.eps).log().sub((var + bn.eps).log()).abs().mean().item()
        layers.append((lname, shift, ratio))
    r1, mAP = evaluate(model, q, g)
    row = dict(name=name, rho=rho, rank1=r1, mAP=mAP, layers=layers)
    if precise_bn_batches:
        m = copy.deepcopy(model)
        recompute_main_task_bn_statistics(m, dm.train_loader, precise_bn_batches)
        row["precise"] = evaluate(m, q, g)
        with torch.no_grad():
            h_p = m.eval()(images)
        row["rho_precise"] = spearmanr(pairwise_cosine(h_p), pairwise_cosine(h_batch)).statistic
    return row


def markdown(rows, precise_bn_batches):
    """The Markdown tables of :func:`check`'s rows."""
    out = ["| model | Spearman(eval, MT batch stats) | Rank-1 / mAP (running stats) |"
           + (f" Spearman after precise BN | Rank-1 / mAP (MT stats from {precise_bn_batches} "
              "train batches) |" if precise_bn_batches else ""),
           "|---|---|---|" + ("---|---|" if precise_bn_batches else "")]
    for r in rows:
        line = f"| {r['name']} | {r['rho']:.3f} | {100 * r['rank1']:.1f} / {100 * r['mAP']:.1f} |"
        if precise_bn_batches:
            p = r["precise"]
            line += f" {r['rho_precise']:.3f} | {100 * p[0]:.1f} / {100 * p[1]:.1f} |"
        out.append(line)
    out += ["", "Per BN of the test-time heads: mean over channels of |running mean - MT mean| / "
            "MT std, and |log(running var / MT var)|:", "",
            "| model | " + " | ".join(layer[0] for layer in rows[0]["layers"]) + " |",
            "|---|" + "---|" * len(rows[0]["layers"])]
    for r in rows:
        out.append(f"| {r['name']} | " + " | ".join(f"{s:.2f} / {v:.2f}" for _, s, v in r["layers"])
                   + " |")
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``tools/check_bn_statistics.py`` (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME=CONFIG:CHECKPOINT")
    p.add_argument("--root", default="")
    p.add_argument("--precise-bn-batches", type=int, default=50)
    p.add_argument("--out", default="", help="write the Markdown table here too")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return p


def main(argv: Optional[List[str]] = None) -> List[dict]:
    """Check every ``--model`` of the command line ``argv``; print (and with ``--out`` write)
    the Markdown tables and return one row per model (:func:`check`).

    Examples::

        >>> rows = main(["--model", "MPN=configs/mpn_synthetic.yaml:model.pth.tar-12",
        ...              "--precise-bn-batches", "4"])
    """
    a = build_parser().parse_args(argv)
    torch.manual_seed(0)
    rows = [check(*load_model_spec(s, a.root, a.opts), a.precise_bn_batches) for s in a.model]
    text = markdown(rows, a.precise_bn_batches)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return rows
