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
``resnet50``); ``mpn_o:fast_kernels=0`` times the heads' reference Fig. 6 chain
(``PartHeads.fast_kernels`` off: no fused or folded kernel, models/fast_heads.py) side by side
with the default.

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
    python tools/benchmark_complexity.py --models mpn_o mpn_o:fast_kernels=0 pcb_p6
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
import re
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .. import compat
from ..engine.mixins import amp_dtype
from ..environment import cpu_model
from ..losses import mpn_loss_terms
from ..models import IDE_MODELS, MODEL_NAMES, MPN, MPNConfig, build_ide, build_mpn, count_parameters

MODELS = ("mpn_o", "mpn", "mpn_star", "mpn_baseline", "pcb_p6", "resnet50", "osnet_x1_0",
          # the CPU-friendly trunk whose ImageNet weights install offline (stride 16)
          "mpn_o_mobilenetv2", "mpn_mobilenetv2", "mpn_baseline_mobilenetv2", "ide_mobilenetv2")
NUM_CLASSES = 751
#: the CPU flags that decide which kernels run (/proc/cpuinfo names)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
#: ``--models`` override that is a switch of the MPN heads (``PartHeads.fast_kernels``), not
#: an :class:`MPNConfig` field, with its accepted values
HEAD_SWITCH, HEAD_SWITCH_VALUES = "fast_kernels", (0, 1)


# ----------------------------------------------------------------------------- models
def parse_spec(spec: str) -> Tuple[str, dict]:
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


def build(spec: str, input_size: Tuple[int, int]) -> nn.Module:
    """The model of a ``--models`` entry (see :func:`parse_spec`); MPN-family models are built
    for the benchmark's input (MPN*'s RGA-S), ``fast_kernels=0`` selects their heads'
    reference chain.

    Examples::

        >>> model = build("mpn_o:backbone=resnet18,fast_kernels=0", (256, 128))
        >>> model.main_heads.fast_kernels
        False
    """
    name, overrides = parse_spec(spec)
    if name in MODEL_NAMES:
        fast = overrides.pop(HEAD_SWITCH, 1)
        if fast not in HEAD_SWITCH_VALUES:
            raise ValueError(f"model '{spec}': {HEAD_SWITCH} must be one of {HEAD_SWITCH_VALUES}")
        model = build_mpn(NUM_CLASSES, loss="triplet", variant=name, input_size=input_size,
                          **overrides)
        for heads in (model.main_heads, model.auxiliary_heads):
            if heads is not None:
                heads.fast_kernels = bool(fast)
        return model
    if name in IDE_MODELS or name == "ide":
        overrides.setdefault("backbone", IDE_MODELS.get(name, MPNConfig.backbone))
        return build_ide(NUM_CLASSES, loss="softmax", pretrained=False, **overrides)
    return compat.models.build_model(name, num_classes=NUM_CLASSES, loss="softmax",
                                     pretrained=False, use_gpu=False)


def classifier_params(model: nn.Module) -> List[nn.Parameter]:
    """The classification layers' parameters (excluded from the counts, as in the paper)."""
    if isinstance(model, MPN):
        return model.classifier_parameters()
    mods = [m for n, m in model.named_modules() if n.startswith("classifier")]
    return [p for m in mods for p in m.parameters()]


def params(model: nn.Module) -> Tuple[int, int]:
    """(parameters at training time, at test time), classifiers excluded."""
    total = count_parameters([model])
    cls = sum(p.numel() for p in {id(p): p for p in classifier_params(model)}.values())
    test = count_parameters(model.test_time_modules()) if isinstance(model, MPN) else total - cls
    return total - cls, test


def train_loss(model: nn.Module, x: torch.Tensor, pids: torch.Tensor,
               mask: Optional[torch.Tensor], roi: Optional[torch.Tensor]) -> torch.Tensor:
    """Each model's real training loss (MPN: Eq. 10, :func:`~mpn_plugin.losses.mpn_loss_terms`
    with the paper's weights; torchreid models: cross-entropy)."""
    if isinstance(model, MPN):
        out = model(x, prior_mask=mask, prior_roi=roi)
        return sum(mpn_loss_terms(out, pids).values())
    out = model(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    return sum(F.cross_entropy(o, pids) for o in outs)


# ----------------------------------------------------------------------------- machine
def machine_facts(device: torch.device) -> dict:
    """What decides the timings besides the models: CPU model and flags, threads, the BLAS and
    oneDNN torch was built with and uses, the kernels' CPU capability."""
    cpu, flags = cpu_model(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
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


def machine_line(m: dict) -> str:
    """The machine facts as one sentence of the report."""
    flags = ("unknown" if m["cpu_flags"] is None else
             " ".join(f.upper() if on else f"no-{f}" for f, on in m["cpu_flags"].items()))
    return (f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs; {flags}); torch "
            f"{m['torch']}, {m['threads']} threads, kernels {m['cpu_capability']}, BLAS "
            f"{m['blas']} ({m['mkl']}), oneDNN {m['onednn']} (available "
            f"{m['mkldnn_available']}, enabled {m['mkldnn_enabled']}), device {m['device']}.")


# ----------------------------------------------------------------------------- counters
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


def copied_mb(fn: Callable) -> float:
    """MB written by layout copies during ``fn()`` (deterministic: the same on any machine)."""
    with CopyCounter() as counter:
        fn()
    return counter.bytes / 1e6


def gflops(fn: Callable) -> float:
    """GFLOPs (2 x multiply-adds) of ``fn()``."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def timed(fn: Callable, sync: Callable) -> float:
    """Seconds one call of ``fn`` takes (the device synchronised before and after)."""
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def spread(values: List[float], batch_size: int) -> Tuple[float, float, float]:
    """ms per image: (median, min, max) of per-batch times in seconds."""
    ms = [1000 * v / batch_size for v in values]
    return statistics.median(ms), min(ms), max(ms)


def top_ops(prof, limit: int) -> List[dict]:
    """The ``limit`` ops with the most self CPU time of a ``torch.profiler`` run."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:limit]
    return [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000, "calls": e.count}
            for e in events]


def profile(fn: Callable, steps: int, limit: int) -> Tuple[List[dict], str]:
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


# ----------------------------------------------------------------------------- workload
class Workload:
    """The models of one run, their SGD optimizers and the one batch they all see: random
    images, S x A identities (A = 4) and, for the MPN models, random priors at the size of
    their F (:meth:`~mpn_plugin.models.Backbone.feature_size`).

    Args:
        specs (list): ``--models`` entries (:func:`build`).
        height, width, batch_size (int): the input.
        device (torch.device): where the models run.
        heads_share (bool): keep the models' trunks (``model.backbone``) to run alone.
    """

    def __init__(self, specs, height: int, width: int, batch_size: int, device: torch.device,
                 heads_share: bool = False):
        self.device, self.batch_size = device, batch_size
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.models = {n: build(n, (height, width)).to(device) for n in specs}
        self.trunks = {n: m.backbone for n, m in self.models.items()
                       if heads_share and isinstance(getattr(m, "backbone", None), nn.Module)}
        self.x = torch.randn(batch_size, 3, height, width, device=device)
        self.pids = torch.arange(batch_size, device=device) // 4          # S x A = (B/4) x 4
        by_size: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}
        self.priors = {}
        for n, m in self.models.items():
            if isinstance(m, MPN):
                size = m.backbone.feature_size(height, width)
                if size not in by_size:
                    by_size[size] = self._random_prior(size)
                self.priors[n] = by_size[size]
        self.opt = {n: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
                    for n, m in self.models.items()}

    def _random_prior(self, feature_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
        B, device = self.batch_size, self.device
        mask = (torch.rand(B, *feature_size, device=device) > 0.3).float()
        roi = torch.stack([torch.rand(B, device=device) * 0.2,
                           0.8 + torch.rand(B, device=device) * 0.2], 1)
        return mask, roi

    def autocast(self, on: bool):
        return torch.autocast(self.device.type, dtype=amp_dtype(self.device.type), enabled=on)

    def loss(self, n: str, k: Optional[int] = None) -> torch.Tensor:
        """The training loss of model ``n`` (in training mode) on the first ``k`` images."""
        mask, roi = self.priors.get(n, (None, None))
        cut = slice(None) if k is None else slice(k)
        return train_loss(self.models[n].train(), self.x[cut], self.pids[cut],
                          None if mask is None else mask[cut], None if roi is None else roi[cut])

    def step(self, n: str, amp: bool = False) -> None:
        """One training step (forward, backward, SGD step) of model ``n``."""
        with self.autocast(amp):
            loss = self.loss(n)
        self.opt[n].zero_grad(set_to_none=True)
        loss.float().backward()
        self.opt[n].step()

    @torch.no_grad()
    def infer(self, n: str, amp: bool = False) -> torch.Tensor:
        """The test-time features of model ``n``."""
        with self.autocast(amp):
            return self.models[n].eval()(self.x).float()

    def trunk_step(self, n: str) -> None:
        """Forward + backward of model ``n``'s trunk alone (training mode)."""
        self.models[n].train()
        self.trunks[n](self.x).sum().backward()
        self.models[n].zero_grad(set_to_none=True)

    @torch.no_grad()
    def trunk_infer(self, n: str) -> torch.Tensor:
        """Model ``n``'s trunk alone at inference."""
        return self.models[n].eval().backbone(self.x)


# ----------------------------------------------------------------------------- measuring
def count_params_and_flops(work: Workload) -> Dict[str, dict]:
    """Per model: parameters, test GFLOPs (one image), training-forward GFLOPs per image
    (8 images at most), and with trunks the trunk's GFLOPs and the heads' share."""
    res = {}
    x = work.x
    for n, m in work.models.items():
        ptrain, ptest = params(m)
        k = min(8, work.batch_size)

        def test_graph():
            with torch.no_grad():
                m.eval()(x[:1])

        res[n] = {"params_train": ptrain, "params_test": ptest, "gflops": gflops(test_graph),
                  "gflops_train": gflops(lambda: work.loss(n, k)) / k}
        if n in work.trunks:
            with torch.no_grad():
                m.eval()
                trunk = gflops(lambda: work.trunks[n](x[:1]))
                m.train()
                trunk_train = gflops(lambda: work.trunks[n](x[:k])) / k
            res[n].update(gflops_trunk=trunk,
                          heads_share_flops_test=1 - trunk / res[n]["gflops"],
                          heads_share_flops_train=1 - trunk_train / res[n]["gflops_train"])
    return res


def count_copies(work: Workload, res: Dict[str, dict]) -> None:
    """MB of layout copies per training step and per inference, into ``res`` (after one
    step: the optimizer's state exists)."""
    for n in work.models:
        work.step(n)
        res[n]["copied_mb_train"] = copied_mb(lambda: work.step(n))
        res[n]["copied_mb_infer"] = copied_mb(lambda: work.infer(n))


def time_rounds(work: Workload, rounds: int, warmup: int, amp: bool) -> Dict[str, dict]:
    """Interleaved round robin: per round, each model's training step and inference (and its
    trunk's, with trunks), float32 then mixed precision; the seconds of the rounds after
    ``warmup``, per model and kind (``train``, ``infer``, ``train_amp``, ``trunk_train``...)."""
    modes = ("", "_amp") if amp else ("",)
    times = {n: {k + mode: [] for k in ("train", "infer") for mode in modes} for n in work.models}
    for n in work.trunks:
        times[n].update(trunk_train=[], trunk_infer=[])
    for r in range(rounds):
        for n in work.models:
            for mode in modes:
                t_train = timed(lambda: work.step(n, bool(mode)), work.sync)
                t_inf = timed(lambda: work.infer(n, bool(mode)), work.sync)
                if r >= warmup:
                    times[n]["train" + mode].append(t_train)
                    times[n]["infer" + mode].append(t_inf)
            if n in work.trunks:
                t_train = timed(lambda: work.trunk_step(n), work.sync)
                t_inf = timed(lambda: work.trunk_infer(n), work.sync)
                if r >= warmup:
                    times[n]["trunk_train"].append(t_train)
                    times[n]["trunk_infer"].append(t_inf)
    return times


def summarise_times(work: Workload, times: Dict[str, dict], res: Dict[str, dict],
                    amp: bool) -> None:
    """ms/image (median, min, max) per model and kind into ``res``, the heads' share of the
    time (with trunks) and, with ``amp``, the features' agreement with float32."""
    for n in work.models:
        for k, v in times[n].items():
            if not v:                                    # --flops-only
                continue
            base = k[:-4] if k.endswith("_amp") else k
            suffix = "_amp" if k.endswith("_amp") else ""
            med, lo, hi = spread(v, work.batch_size)
            res[n].update({f"{base}_ms_per_img{suffix}": med, f"{base}_ms_per_img_min{suffix}": lo,
                           f"{base}_ms_per_img_max{suffix}": hi})
        if n in work.trunks and times[n]["train"]:
            for kind in ("train", "infer"):
                res[n][f"heads_share_time_{kind}"] = (
                    1 - res[n][f"trunk_{kind}_ms_per_img"] / res[n][f"{kind}_ms_per_img"])
        if amp:
            ref32, low = work.infer(n), work.infer(n, True)
            res[n]["amp_feature_cosine_min"] = float(F.cosine_similarity(ref32, low).min())


def run_profiles(work: Workload, res: Dict[str, dict], steps: int, top: int) -> None:
    """Profile each model's training step and inference; top ops into ``res``, tables printed."""
    for n in work.models:
        for kind, fn in (("train", lambda: work.step(n)), ("infer", lambda: work.infer(n))):
            ops, text = profile(fn, steps, top)
            res[n][f"profile_{kind}"] = ops
            print(f"\nProfile of {n}, {'training step' if kind == 'train' else 'inference'} "
                  f"({steps} calls, batch {work.batch_size}; top {top} ops by "
                  f"self CPU time):\n{text}")


# ----------------------------------------------------------------------------- report
def cell(r: dict, key: str, digits: int = 1) -> str:
    """A table cell: ``r[key]`` with ``digits`` decimals, or ``-`` when not measured."""
    return f"{r[key]:.{digits}f}" if key in r else "-"


def table_row(*cells) -> str:
    """A Markdown table row of ``cells``."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def span(r: dict, key: str) -> str:
    """The min-max cell of a timed quantity (``-`` when not measured)."""
    return f"{r[key + '_min']:.1f}-{r[key + '_max']:.1f}" if key + "_min" in r else "-"


def results_table(a: argparse.Namespace, device: torch.device, res: Dict[str, dict],
                  ref_name: str) -> List[str]:
    """The main table: parameters, FLOPs, times and the ratios to ``ref_name`` ('' = none)."""
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
        def rat(k, r=r):
            return f"{r[k] / ref[k]:.2f}" if ref and k in r else "-"
        lines.append(table_row(
            n, f"{r['params_train'] / 1e6:.2f}", f"{r['params_test'] / 1e6:.2f}",
            f"{r['gflops']:.2f}", f"{r['gflops_train']:.2f}",
            cell(r, 'train_ms_per_img'), span(r, 'train_ms_per_img'),
            cell(r, 'infer_ms_per_img'), span(r, 'infer_ms_per_img'),
            *(rat(k) for k in ('train_ms_per_img', 'infer_ms_per_img', 'gflops_train',
                               'gflops'))))
    return lines


def heads_table(res: Dict[str, dict]) -> List[str]:
    """The heads' share table (``--heads-share``)."""
    lines = ["", "Heads' share (everything after the trunk's F: heads, part-map gather, "
             "classifiers); FLOPs exact; the trunk timed alone in the same interleaved "
             "rounds:", "",
             "| model | params test (M) | trunk GFLOPs | GFLOPs test | heads' share test FLOPs | "
             "heads' share train fwd FLOPs | trunk infer ms/img | heads' share infer time | "
             "trunk train ms/img | heads' share train time |", "|---" * 10 + "|"]
    for n, r in res.items():
        if "gflops_trunk" not in r:
            continue
        lines.append(table_row(
            n, f"{r['params_test'] / 1e6:.2f}", f"{r['gflops_trunk']:.3f}",
            f"{r['gflops']:.3f}", f"{r['heads_share_flops_test']:.2f}",
            f"{r['heads_share_flops_train']:.2f}", cell(r, 'trunk_infer_ms_per_img'),
            cell(r, 'heads_share_time_infer', 2), cell(r, 'trunk_train_ms_per_img'),
            cell(r, 'heads_share_time_train', 2)))
    return lines


def copies_table(res: Dict[str, dict], batch_size: int) -> List[str]:
    """The layout-copies table (``--copies``)."""
    lines = ["", f"Layout copies (MB written by copy_/clone/_to_copy, batch {batch_size}; "
             "exact, the same on any machine):", "",
             "| model | copied MB per training step | copied MB per inference |", "|---|---|---|"]
    return lines + [f"| {n} | {r['copied_mb_train']:.1f} | {r['copied_mb_infer']:.1f} |"
                    for n, r in res.items()]


def amp_table(res: Dict[str, dict], device: torch.device) -> List[str]:
    """The mixed-precision table (``--amp``)."""
    lines = ["", f"Mixed precision ({amp_dtype(device.type)} autocast, same run):", "",
             "| model | train ms/img fp32 | train ms/img amp | train speed-up | "
             "infer ms/img fp32 | infer ms/img amp | infer speed-up | min feature cosine |",
             "|---" * 8 + "|"]
    for n, r in res.items():
        speed_ups = [f"{r[k] / r[k + '_amp']:.2f}x" for k in ('train_ms_per_img',
                                                              'infer_ms_per_img')]
        lines.append(table_row(
            n, f"{r['train_ms_per_img']:.1f}", f"{r['train_ms_per_img_amp']:.1f}", speed_ups[0],
            f"{r['infer_ms_per_img']:.1f}", f"{r['infer_ms_per_img_amp']:.1f}", speed_ups[1],
            f"{r['amp_feature_cosine_min']:.4f}"))
    return lines


def target_lines(res: Dict[str, dict], reference: str) -> List[str]:
    """MPN° against the reference model: time ratio (with its min-max over the repeats) next to
    the FLOP ratio, and whether the time stays within 5% of what the FLOPs say."""
    o, ref, lines = res["mpn_o"], res[reference], []
    for kind, t, f in (("inference", "infer_ms_per_img", "gflops"),
                       ("training step", "train_ms_per_img", "gflops_train")):
        tr, fr = o[t] / ref[t], o[f] / ref[f]
        lines.append(f"MPN° vs {reference}, {kind}: time ratio {tr:.2f} (min-max over repeats "
                     f"{o[t + '_min'] / ref[t + '_max']:.2f}-"
                     f"{o[t + '_max'] / ref[t + '_min']:.2f}), FLOP ratio {fr:.2f} -> "
                     f"{'within' if tr <= 1.05 * fr else 'above'} the 5% target")
    return lines


def report_lines(a: argparse.Namespace, device: torch.device, res: Dict[str, dict],
                 with_trunks: bool) -> List[str]:
    """Every table the options ask for, in order."""
    ref = res.get(a.reference)
    if ref is None:
        print(f"--reference '{a.reference}' is not one of --models: no ratios")
    lines = results_table(a, device, res, a.reference if ref else "")
    if with_trunks:
        lines += heads_table(res)
    if a.copies:
        lines += copies_table(res, a.batch)
    if a.amp:
        lines += amp_table(res, device)
    return lines


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The options of ``tools/benchmark_complexity.py`` (see the module docstring)."""
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
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The parsed options, ``--quick`` applied and checked; bad ``--models`` specs raise
    ``ValueError`` here, before any work."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.quick:
        a.repeats, a.warmup, a.batch = 2, 1, 8
    if a.flops_only and a.amp:
        p.error("--amp times mixed precision: it cannot run with --flops-only")
    if a.repeats < 1 or a.warmup < 0 or a.batch < 2:
        p.error("--repeats must be >= 1, --warmup >= 0 and --batch >= 2 (BatchNorm in training)")
    for spec in a.models:
        parse_spec(spec)
    return a


def main(argv: Optional[List[str]] = None) -> dict:
    """Run the benchmark of the command line ``argv``; print the tables and return the JSON
    (``machine``, ``settings``, ``models``: per model the measured quantities).

    Examples::

        >>> out = main(["--quick", "--models", "mpn_o", "pcb_p6", "--flops-only"])
        >>> out["models"]["mpn_o"]["gflops"] > 0
        True
    """
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a.machine = machine_facts(device)
    torch.manual_seed(0)
    work = Workload(a.models, a.height, a.width, a.batch, device, a.heads_share)
    res = count_params_and_flops(work)
    if a.copies:
        count_copies(work, res)
    rounds = 0 if a.flops_only else a.warmup + a.repeats
    times = time_rounds(work, rounds, a.warmup, a.amp)
    summarise_times(work, times, res, a.amp)
    table = "\n".join(report_lines(a, device, res, bool(work.trunks)))
    print(table)
    if (a.reference in res and "mpn_o" in res and a.reference != "mpn_o"
            and not a.flops_only):
        print("\n".join(target_lines(res, a.reference)))
    if a.profile:
        run_profiles(work, res, a.profile_steps, a.profile_top)
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
