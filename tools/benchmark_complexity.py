#!/usr/bin/env python
"""Model complexity side by side (Table 9 at CPU scale): parameters at train/test time
(classifiers excluded, as in the paper), GFLOPs of the test and training graphs, training
ms/image (forward + backward + SGD step) and inference ms/image, measured interleaved in one
process after warm-up (median, min and max of the repeats), with each model's ratio to a
reference model (torchreid's ``pcb_p6`` by default), and the machine facts that change the
answer (CPU model and flags, threads, BLAS / oneDNN).

FLOPs are counted by ONE counter for every model, ``torch.utils.flop_counter.FlopCounterMode``
(it sees matmuls/einsums too, which module-hook counters miss); it reports 2 x multiply-adds.

A model is a factory name, optionally with MPN/IDE constructor overrides after a colon
(``name:key=value,key=value``): ``mpn_o:backbone=resnet18``, ``mpn_o_mobilenetv2:dim=128``,
``ide:backbone=resnet18`` (``ide`` = the plain softmax model on an MPN trunk, default
``resnet50``); ``mpn_o:inference_layout=positions_first`` times the other layout of the heads'
inference GEMM (``PartHeads.inference_layout``) side by side with the default.

Examples::

    python tools/benchmark_complexity.py                       # 384x128, batch 16
    python tools/benchmark_complexity.py --quick --json out.json
    python tools/benchmark_complexity.py --models mpn pcb_p6 --amp   # + mixed-precision timing
    python tools/benchmark_complexity.py --height 128 --width 64 --models mpn_mobilenetv2 \
        mpn_baseline_mobilenetv2 ide_mobilenetv2 pcb_p6              # the CPU recipes' size
    python tools/benchmark_complexity.py --height 128 --width 64 --heads-share \
        --reference mpn_baseline:backbone=resnet18 --models mpn_o:backbone=resnet18 \
        mpn:backbone=resnet18 mpn_baseline:backbone=resnet18 ide:backbone=resnet18
    python tools/benchmark_complexity.py --models mpn_o pcb_p6 --profile --repeats 1 --warmup 1
    python tools/benchmark_complexity.py --flops-only --heads-share --height 256 --width 128 \
        --models mpn_o_mobilenetv2 mpn_o_mobilenetv2:dim=128 ide_mobilenetv2

``--amp`` also times every model with the forward under ``torch.autocast`` (bfloat16 on CPU,
float16 on CUDA: the dtypes of ``train.amp`` / ``test.amp``), interleaved with the float32 runs,
and prints the speed-up and the features' agreement (cosine similarity to float32).

``--heads-share`` adds, for the models with an MPN/IDE trunk (``model.backbone``), the trunk's
FLOPs and the heads' share (everything after F: heads, part-map gather, classifiers; MPN*'s
RGA-S modules count with the heads) of the test and training-forward FLOPs, and times the
trunk alone (inference; training forward + backward) in the same interleaved rounds for the
heads' share of the time.

``--copies`` counts the MB written by layout copies (``copy_``/``clone``/``_to_copy``) in one
training step and one inference per model: exact on any machine, it shows copies a path adds.

``--flops-only`` skips the timing (parameters and FLOPs are exact on any machine; the time
columns print ``-``): for tables whose times are to be measured on a quiet machine.

``--profile`` runs ``torch.profiler`` on the training step and on inference separately (after
the timed rounds, so they are not disturbed) and prints the top ops by self CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mpn_plugin  # noqa: E402,F401
from mpn_plugin import compat  # noqa: E402
from mpn_plugin.engine.mixins import amp_dtype  # noqa: E402
from mpn_plugin.losses import (class_wise_alignment_loss, cosine_batch_hard_triplet_loss,  # noqa: E402
                               part_id_loss)
from mpn_plugin.models import (IDE_MODELS, MODEL_NAMES, MPN, MPNConfig, build_ide,  # noqa: E402
                               build_mpn, count_parameters)
from mpn_plugin.models.part_head import INFERENCE_LAYOUTS, TRAINING_KERNELS  # noqa: E402

MODELS = ("mpn_o", "mpn", "mpn_star", "mpn_baseline", "pcb_p6", "resnet50", "osnet_x1_0",
          # the CPU-friendly trunk whose ImageNet weights install offline (stride 16)
          "mpn_o_mobilenetv2", "mpn_mobilenetv2", "mpn_baseline_mobilenetv2", "ide_mobilenetv2")
NUM_CLASSES = 751
#: the CPU flags that decide which kernels run (/proc/cpuinfo names)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def parse_spec(spec):
    """``name[:key=value,...]`` -> (name, overrides); integer values become ints.

    Examples::

        >>> parse_spec("mpn_o:backbone=resnet18,dim=128")
        ('mpn_o', {'backbone': 'resnet18', 'dim': 128})
    """
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"model '{spec}': overrides must be key=value, got '{item}'")
        overrides[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
    if overrides and name not in MODEL_NAMES and name not in IDE_MODELS and name != "ide":
        raise ValueError(f"model '{spec}': overrides apply to MPN-family and IDE models only")
    return name, overrides


def build(spec, input_size):
    """The model of a ``--models`` entry (see :func:`parse_spec`)."""
    name, overrides = parse_spec(spec)
    if name in MODEL_NAMES:        # MPN family: built for the benchmark's input (MPN*'s RGA-S)
        # PartHeads attributes (not MPNConfig fields): the heads' GEMM kernels and layouts
        kernels = {key: (overrides.pop(key), choices) for key, choices in
                   (("inference_layout", INFERENCE_LAYOUTS), ("training_kernel", TRAINING_KERNELS))
                   if key in overrides}
        model = build_mpn(NUM_CLASSES, loss="triplet", variant=name, input_size=input_size,
                          **overrides)
        for key, (value, choices) in kernels.items():
            if value not in choices:
                raise ValueError(f"model '{spec}': {key} must be one of {choices}")
            for heads in (model.main_heads, model.auxiliary_heads):
                if heads is not None:
                    setattr(heads, key, value)
        return model
    if name in IDE_MODELS or name == "ide":
        overrides.setdefault("backbone", IDE_MODELS.get(name, MPNConfig.backbone))
        return build_ide(NUM_CLASSES, loss="softmax", pretrained=False, **overrides)
    return compat.models.build_model(name, num_classes=NUM_CLASSES, loss="softmax",
                                     pretrained=False, use_gpu=False)


def machine_facts(device):
    """What decides the timings besides the models: CPU model and flags, threads, the BLAS and
    oneDNN torch was built with and uses, the kernels' CPU capability."""
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu in ("", platform.processor(),
                                                           platform.machine()):
                    cpu = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:                # not Linux: the flags stay unknown (None)
        flags = None
    config = torch.__config__.show()

    def found(pattern):
        m = re.search(pattern, config)
        return m.group(1).strip() if m else "none"

    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(),
        "cpu_flags": ({f: f in flags for f in CPU_FLAGS} if flags is not None else None),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": found(r"BLAS_INFO=(\w+)"), "mkl": found(r"(Math Kernel Library Version [\w.-]+)"),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "onednn": found(r"((?:MKL-DNN|oneDNN) v[\d.]+)"),
        "device": device.type if device.type != "cuda" else torch.cuda.get_device_name(device),
    }


def machine_line(m):
    flags = ("unknown" if m["cpu_flags"] is None else
             " ".join(f.upper() if on else f"no-{f}" for f, on in m["cpu_flags"].items()))
    return (f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs; {flags}); torch "
            f"{m['torch']}, {m['threads']} threads, kernels {m['cpu_capability']}, BLAS "
            f"{m['blas']} ({m['mkl']}), oneDNN {m['onednn']} (available "
            f"{m['mkldnn_available']}, enabled {m['mkldnn_enabled']}), device {m['device']}.")


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


class CopyCounter(TorchDispatchMode):
    """Bytes written by layout copies (``copy_``, ``clone``, ``_to_copy``: ``.contiguous()``,
    permute-then-reshape, gradients in another layout than their parameter's) while active."""

    COPIES = ("copy_", "clone", "_to_copy")

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in self.COPIES:
            dst = args[0] if func.overloadpacket.__name__ == "copy_" else out
            self.bytes += dst.numel() * dst.element_size()
        return out


def copied_mb(fn):
    """MB written by layout copies during ``fn()`` (deterministic: the same on any machine)."""
    with CopyCounter() as counter:
        fn()
    return counter.bytes / 1e6


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


def spread(values, batch_size):
    """ms per image: (median, min, max) of per-batch times in seconds."""
    ms = [1000 * v / batch_size for v in values]
    return statistics.median(ms), min(ms), max(ms)


def top_ops(prof, limit):
    """The ``limit`` ops with the most self CPU time of a ``torch.profiler`` run."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:limit]
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "calls": e.count}
            for e in events]


def profile(fn, steps, limit):
    """Profile ``steps`` calls of ``fn`` (after one unprofiled call); returns the top ops and
    the profiler's table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    fn()
    with torch_profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
    return top_ops(prof, limit), prof.key_averages().table(sort_by="self_cpu_time_total",
                                                           row_limit=limit)


def cell(r, key, digits=1):
    """A table cell: ``r[key]`` with ``digits`` decimals, or ``-`` when not measured."""
    return f"{r[key]:.{digits}f}" if key in r else "-"


def span(r, key):
    """The min-max cell of a timed quantity (``-`` when not measured)."""
    return f"{r[key + '_min']:.1f}-{r[key + '_max']:.1f}" if key + "_min" in r else "-"


def results_table(a, device, res, ref_name):
    ref = res.get(ref_name)
    tag = ref_name.split(":")[0] if ref_name else "-"
    timing = (f"median (min-max) of {a.repeats} interleaved repeats after {a.warmup} warm-up"
              if not a.flops_only else "times not taken (--flops-only: to be measured on a "
              "quiet machine)")
    lines = [f"Input {a.height}x{a.width}, batch {a.batch}, {a.threads} threads, {device}, "
             f"{timing}; FLOPs = 2 x MACs.", "", machine_line(a.machine), "",
             "| model | params train (M) | params test (M) | GFLOPs test | GFLOPs train fwd | "
             "train ms/img | train min-max | infer ms/img | infer min-max | "
             f"train time / {tag} | infer time / {tag} | train FLOPs / {tag} | "
             f"test FLOPs / {tag} |", "|---" * 13 + "|"]
    for n, r in res.items():
        rat = (lambda k: f"{r[k] / ref[k]:.2f}" if ref and k in r else "-")
        lines.append(f"| {n} | {r['params_train'] / 1e6:.2f} | {r['params_test'] / 1e6:.2f} | "
                     f"{r['gflops']:.2f} | {r['gflops_train']:.2f} | "
                     f"{cell(r, 'train_ms_per_img')} | "
                     f"{span(r, 'train_ms_per_img')} | {cell(r, 'infer_ms_per_img')} | "
                     f"{span(r, 'infer_ms_per_img')} | "
                     f"{rat('train_ms_per_img')} | {rat('infer_ms_per_img')} | "
                     f"{rat('gflops_train')} | {rat('gflops')} |")
    return lines


def heads_table(res):
    lines = ["", "Heads' share (everything after the trunk's F: heads, part-map gather, "
             "classifiers); FLOPs exact; the trunk timed alone in the same interleaved "
             "rounds:", "",
             "| model | params test (M) | trunk GFLOPs | GFLOPs test | heads' share test FLOPs | "
             "heads' share train fwd FLOPs | trunk infer ms/img | heads' share infer time | "
             "trunk train ms/img | heads' share train time |", "|---" * 10 + "|"]
    for n, r in res.items():
        if "gflops_trunk" not in r:
            continue
        lines.append(f"| {n} | {r['params_test'] / 1e6:.2f} | {r['gflops_trunk']:.3f} | "
                     f"{r['gflops']:.3f} | {r['heads_share_flops_test']:.2f} | "
                     f"{r['heads_share_flops_train']:.2f} | {cell(r, 'trunk_infer_ms_per_img')} | "
                     f"{cell(r, 'heads_share_time_infer', 2)} | "
                     f"{cell(r, 'trunk_train_ms_per_img')} | "
                     f"{cell(r, 'heads_share_time_train', 2)} |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--models", nargs="+", default=list(MODELS),
                   help="factory names, optionally name:key=value,... (MPN/IDE overrides)")
    p.add_argument("--reference", default="pcb_p6",
                   help="the --models entry the ratios are taken to (default pcb_p6)")
    p.add_argument("--quick", action="store_true", help="short run: 2 repeats, 1 warm-up, batch 8")
    p.add_argument("--amp", action="store_true", help="also time mixed precision")
    p.add_argument("--heads-share", action="store_true",
                   help="also report the trunk's FLOPs/time and the heads' share")
    p.add_argument("--copies", action="store_true",
                   help="also count the MB of layout copies in a training step and an inference")
    p.add_argument("--flops-only", action="store_true",
                   help="parameters and FLOPs only (exact on any machine), no timing")
    p.add_argument("--profile", action="store_true",
                   help="torch.profiler top ops (training step and inference) per model")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--json", default="")
    p.add_argument("--out", default="", help="also write the Markdown table here")
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.warmup, a.batch = 2, 1, 8
    if a.flops_only and a.amp:
        p.error("--amp times mixed precision: it cannot run with --flops-only")
    if a.repeats < 1 or a.warmup < 0 or a.batch < 2:
        p.error("--repeats must be >= 1, --warmup >= 0 and --batch >= 2 (BatchNorm in training)")
    for spec in a.models:
        parse_spec(spec)                                   # bad specs fail before any work
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a.machine = machine_facts(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    models = {n: build(n, (a.height, a.width)).to(device) for n in a.models}
    trunks = {n: m.backbone for n, m in models.items()
              if a.heads_share and isinstance(getattr(m, "backbone", None), nn.Module)}
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

    def trunk_step(n):
        models[n].train()
        trunks[n](x).sum().backward()
        models[n].zero_grad(set_to_none=True)

    @torch.no_grad()
    def trunk_infer(n):
        return models[n].eval().backbone(x)

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
        if n in trunks:
            with torch.no_grad():
                m.eval()
                trunk = gflops(lambda: trunks[n](x[:1]))
                m.train()
                trunk_train = gflops(lambda: trunks[n](x[:k])) / k
            res[n].update(gflops_trunk=trunk,
                          heads_share_flops_test=1 - trunk / res[n]["gflops"],
                          heads_share_flops_train=1 - trunk_train / res[n]["gflops_train"])
    if a.copies:                      # after one step: the optimizer's state exists
        for n in models:
            step(n)
            res[n]["copied_mb_train"] = copied_mb(lambda: step(n))
            res[n]["copied_mb_infer"] = copied_mb(lambda: infer(n))
    modes = ("", "_amp") if a.amp else ("",)
    times = {n: {k + mode: [] for k in ("train", "infer") for mode in modes} for n in models}
    for n in trunks:
        times[n].update(trunk_train=[], trunk_infer=[])
    for r in range(0 if a.flops_only else a.warmup + a.repeats):   # interleaved round robin
        for n in models:
            for mode in modes:
                t_train = timed(lambda: step(n, bool(mode)), sync)
                t_inf = timed(lambda: infer(n, bool(mode)), sync)
                if r >= a.warmup:
                    times[n]["train" + mode].append(t_train)
                    times[n]["infer" + mode].append(t_inf)
            if n in trunks:
                t_train = timed(lambda: trunk_step(n), sync)
                t_inf = timed(lambda: trunk_infer(n), sync)
                if r >= a.warmup:
                    times[n]["trunk_train"].append(t_train)
                    times[n]["trunk_infer"].append(t_inf)
    for n in models:
        for k, v in times[n].items():
            if not v:                                    # --flops-only
                continue
            base = k[:-4] if k.endswith("_amp") else k
            suffix = "_amp" if k.endswith("_amp") else ""
            med, lo, hi = spread(v, a.batch)
            res[n].update({f"{base}_ms_per_img{suffix}": med, f"{base}_ms_per_img_min{suffix}": lo,
                           f"{base}_ms_per_img_max{suffix}": hi})
        if n in trunks and not a.flops_only:
            for kind in ("train", "infer"):
                res[n][f"heads_share_time_{kind}"] = (
                    1 - res[n][f"trunk_{kind}_ms_per_img"] / res[n][f"{kind}_ms_per_img"])
        if a.amp:
            ref32, low = infer(n), infer(n, True)
            res[n]["amp_feature_cosine_min"] = float(F.cosine_similarity(ref32, low).min())
    ref = res.get(a.reference)
    if ref is None:
        print(f"--reference '{a.reference}' is not one of --models: no ratios")
    lines = results_table(a, device, res, a.reference if ref else "")
    if trunks:
        lines += heads_table(res)
    if a.copies:
        lines += ["", f"Layout copies (MB written by copy_/clone/_to_copy, batch {a.batch}; "
                  "exact, the same on any machine):", "",
                  "| model | copied MB per training step | copied MB per inference |",
                  "|---|---|---|"]
        lines += [f"| {n} | {r['copied_mb_train']:.1f} | {r['copied_mb_infer']:.1f} |"
                  for n, r in res.items()]
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
    if ref and "mpn_o" in res and a.reference != "mpn_o" and not a.flops_only:
        o, tag = res["mpn_o"], a.reference
        for kind, t, f in (("inference", "infer_ms_per_img", "gflops"),
                           ("training step", "train_ms_per_img", "gflops_train")):
            tr, fr = o[t] / ref[t], o[f] / ref[f]
            print(f"MPN° vs {tag}, {kind}: time ratio {tr:.2f} (min-max over repeats "
                  f"{o[t + '_min'] / ref[t + '_max']:.2f}-{o[t + '_max'] / ref[t + '_min']:.2f}), "
                  f"FLOP ratio {fr:.2f} -> {'within' if tr <= 1.05 * fr else 'above'} "
                  "the 5% target")
    if a.profile:
        for n in models:
            for kind, fn in (("train", lambda: step(n)), ("infer", lambda: infer(n))):
                ops, text = profile(fn, a.profile_steps, a.profile_top)
                res[n][f"profile_{kind}"] = ops
                print(f"\nProfile of {n}, {'training step' if kind == 'train' else 'inference'} "
                      f"({a.profile_steps} calls, batch {a.batch}; top {a.profile_top} ops by "
                      f"self CPU time):\n{text}")
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")
    out = {"machine": a.machine,
           "settings": {k: getattr(a, k) for k in ("height", "width", "batch", "repeats",
                                                   "warmup", "threads", "reference",
                                                   "flops_only", "copies")},
           "models": res}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
