#!/usr/bin/env python
"""Model complexity side by side (Table 9 at CPU scale): parameters at train/test time
(classifiers excluded, as in the paper), GFLOPs of the test and training graphs, training
ms/image (forward + backward + SGD step) and inference ms/image, measured interleaved in one
process after warm-up (median of repeats), with each model's ratio to torchreid's ``pcb_p6``.

FLOPs are counted by ONE counter for every model, ``torch.utils.flop_counter.FlopCounterMode``
(it sees matmuls/einsums too, which module-hook counters miss); it reports 2 x multiply-adds.

Examples::

    python tools/benchmark_complexity.py                       # 384x128, batch 16
    python tools/benchmark_complexity.py --quick --json out.json
    python tools/benchmark_complexity.py --models mpn pcb_p6 --amp   # + mixed-precision timing
    python tools/benchmark_complexity.py --height 128 --width 64 --models mpn_mobilenetv2 \
        mpn_baseline_mobilenetv2 ide_mobilenetv2 pcb_p6              # the CPU recipes' size

``--amp`` also times every model with the forward under ``torch.autocast`` (bfloat16 on CPU,
float16 on CUDA: the dtypes of ``train.amp`` / ``test.amp``), interleaved with the float32 runs,
and prints the speed-up and the features' agreement (cosine similarity to float32).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mpn_plugin  # noqa: E402,F401
from mpn_plugin import compat  # noqa: E402
from mpn_plugin.engine.mixins import amp_dtype  # noqa: E402
from mpn_plugin.losses import (class_wise_alignment_loss, cosine_batch_hard_triplet_loss,  # noqa: E402
                               part_id_loss)
from mpn_plugin.models import MODEL_NAMES, MPN, build_mpn, count_parameters  # noqa: E402

MODELS = ("mpn_o", "mpn", "mpn_star", "mpn_baseline", "pcb_p6", "resnet50", "osnet_x1_0",
          # the CPU-friendly trunk whose ImageNet weights install offline (stride 16)
          "mpn_o_mobilenetv2", "mpn_mobilenetv2", "mpn_baseline_mobilenetv2", "ide_mobilenetv2")
NUM_CLASSES = 751


def build(name, input_size):
    if name in MODEL_NAMES:        # MPN family: built for the benchmark's input (MPN*'s RGA-S)
        return build_mpn(NUM_CLASSES, loss="triplet", variant=name, input_size=input_size)
    return compat.models.build_model(name, num_classes=NUM_CLASSES, loss="softmax",
                                     pretrained=False, use_gpu=False)


def classifier_params(model):
    if isinstance(model, MPN):
        return model.classifier_parameters()
    mods = [m for n, m in model.named_modules() if n.startswith("classifier")]
    return [p for m in mods for p in m.parameters()]


def params(model):
    total = count_parameters([model])
    cls = sum(p.numel() for p in {id(p): p for p in classifier_params(model)}.values())
    test = count_parameters(model.test_time_modules()) if isinstance(model, MPN) else total - cls
    return total - cls, test


def batch(B, H, W, device, feature_size):
    x = torch.randn(B, 3, H, W, device=device)
    pids = torch.arange(B, device=device) // 4          # S x A = (B/4) x 4
    Hf, Wf = feature_size
    mask = (torch.rand(B, Hf, Wf, device=device) > 0.3).float()
    roi = torch.stack([torch.rand(B, device=device) * 0.2, 0.8 + torch.rand(B, device=device) * 0.2], 1)
    return x, pids, mask, roi


def train_loss(model, x, pids, mask, roi):
    """Each model's real training loss (MPN: Eq. 10; torchreid models: cross-entropy)."""
    if isinstance(model, MPN):
        out = model(x, prior_mask=mask, prior_roi=roi)
        loss = 0
        for key in ("mt_logits", "at_logits"):
            if out[key] is not None:
                loss = loss + part_id_loss(out[key], pids)
        feats = out["h"] if out["h"] is not None else out["g"]
        loss = loss + cosine_batch_hard_triplet_loss(feats, pids)
        if out["h"] is not None and out["g"] is not None:
            loss = loss + class_wise_alignment_loss(out["h"], out["g"], pids)
        return loss
    out = model(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(F.cross_entropy(o, pids) for o in outs)


def gflops(fn):
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def timed(fn, sync):
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--quick", action="store_true", help="short run: 2 repeats, 1 warm-up, batch 8")
    p.add_argument("--amp", action="store_true", help="also time mixed precision")
    p.add_argument("--json", default="")
    p.add_argument("--out", default="", help="also write the Markdown table here")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.warmup, a.batch = 2, 1, 8
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    models = {n: build(n, (a.height, a.width)).to(device) for n in a.models}
    fs = (a.height // 16, a.width // 16)
    x, pids, mask, roi = batch(a.batch, a.height, a.width, device, fs)
    opt = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for n, m in models.items()}

    def autocast(on):
        return torch.autocast(device.type, dtype=amp_dtype(device.type), enabled=on)

    def step(n, amp=False):
        m = models[n].train()
        with autocast(amp):
            loss = train_loss(m, x, pids, mask, roi)
        opt[n].zero_grad(set_to_none=True)
        loss.float().backward()
        opt[n].step()

    @torch.no_grad()
    def infer(n, amp=False):
        with autocast(amp):
            return models[n].eval()(x).float()

    res = {}
    for n, m in models.items():
        ptrain, ptest = params(m)
        k = min(8, a.batch)

        def test_graph():
            with torch.no_grad():
                m.eval()(x[:1])

        def train_graph():
            train_loss(m.train(), x[:k], pids[:k], mask[:k], roi[:k])

        res[n] = {"params_train": ptrain, "params_test": ptest, "gflops": gflops(test_graph),
                  "gflops_train": gflops(train_graph) / k}
    modes = ("", "_amp") if a.amp else ("",)
    times = {n: {k + mode: [] for k in ("train", "infer") for mode in modes} for n in models}
    for r in range(a.warmup + a.repeats):            # interleaved round robin
        for n in models:
            for mode in modes:
                t_train = timed(lambda: step(n, bool(mode)), sync)
                t_inf = timed(lambda: infer(n, bool(mode)), sync)
                if r >= a.warmup:
                    times[n]["train" + mode].append(t_train)
                    times[n]["infer" + mode].append(t_inf)
    for n in models:
        for k, v in times[n].items():
            res[n][k + "_ms_per_img" if not k.endswith("_amp") else
                   k[:-4] + "_ms_per_img_amp"] = 1000 * statistics.median(v) / a.batch
        if a.amp:
            ref32, low = infer(n), infer(n, True)
            res[n]["amp_feature_cosine_min"] = float(F.cosine_similarity(ref32, low).min())
    ref = res.get("pcb_p6")
    lines = [f"Input {a.height}x{a.width}, batch {a.batch}, {a.threads} threads, {device}, "
             f"median of {a.repeats} interleaved repeats after {a.warmup} warm-up; FLOPs = 2 x MACs.",
             "", "| model | params train (M) | params test (M) | GFLOPs test | GFLOPs train fwd | "
             "train ms/img | infer ms/img | train time / pcb_p6 | infer time / pcb_p6 | "
             "train FLOPs / pcb_p6 | test FLOPs / pcb_p6 |", "|---" * 11 + "|"]
    for n, r in res.items():
        rat = (lambda k: f"{r[k] / ref[k]:.2f}") if ref else (lambda k: "-")
        lines.append(f"| {n} | {r['params_train'] / 1e6:.2f} | {r['params_test'] / 1e6:.2f} | "
                     f"{r['gflops']:.2f} | {r['gflops_train']:.2f} | {r['train_ms_per_img']:.1f} | "
                     f"{r['infer_ms_per_img']:.1f} | {rat('train_ms_per_img')} | "
                     f"{rat('infer_ms_per_img')} | {rat('gflops_train')} | {rat('gflops')} |")
    if a.amp:
        lines += ["", f"Mixed precision ({amp_dtype(device.type)} autocast, same run):", "",
                  "| model | train ms/img fp32 | train ms/img amp | train speed-up | "
                  "infer ms/img fp32 | infer ms/img amp | infer speed-up | min feature cosine |",
                  "|---" * 8 + "|"]
        for n, r in res.items():
            lines.append(f"| {n} | {r['train_ms_per_img']:.1f} | {r['train_ms_per_img_amp']:.1f} | "
                         f"{r['train_ms_per_img'] / r['train_ms_per_img_amp']:.2f}x | "
                         f"{r['infer_ms_per_img']:.1f} | {r['infer_ms_per_img_amp']:.1f} | "
                         f"{r['infer_ms_per_img'] / r['infer_ms_per_img_amp']:.2f}x | "
                         f"{r['amp_feature_cosine_min']:.4f} |")
    table = "\n".join(lines)
    print(table)
    if ref and "mpn_o" in res:
        o = res["mpn_o"]
        for kind, t, f in (("inference", "infer_ms_per_img", "gflops"),
                           ("training step", "train_ms_per_img", "gflops_train")):
            tr, fr = o[t] / ref[t], o[f] / ref[f]
            print(f"MPN° vs pcb_p6, {kind}: time ratio {tr:.2f}, FLOP ratio {fr:.2f} -> "
                  f"{'within' if tr <= 1.05 * fr else 'above'} the 5% target")
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
