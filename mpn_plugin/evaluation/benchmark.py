"""Evaluation cost: our vectorised, chunked CMC/mAP vs torchreid's Python fallback.

(a) Market-1501-sized random problem (3,368 queries x 15,913 gallery, 750 identities, 6
    cameras, 512-d features, cosine distance): torchreid (``compute_distance_matrix`` +
    ``evaluate_rank(use_cython=False)``, what its engine does without Cython) against ours
    (``evaluate_features``, chunked; and ``compute_distance_matrix`` + our ``evaluate_rank``,
    the drop-in on a full matrix). Results must be identical (CMC bitwise, mAP to 1e-9).
(b) MSMT17-sized (11,659 x 82,161, 3,060 identities, 15 cameras, 3,072-d features = MPN's
    6 x 512): ours only; torchreid's peak memory is estimated from the arrays it allocates.

Memory: every measurement runs in a fresh subprocess; after the inputs are built the kernel's
peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``) and the reported peak is
``VmHWM - VmRSS`` measured before the call, i.e. the extra resident memory the evaluation needed
on top of its inputs (numpy *and* torch allocations; tracemalloc would miss torch's).

Examples::

    python tools/benchmark_evaluation.py --out docs/results_evaluation_table.md   # ~5 min
    python tools/benchmark_evaluation.py --quick                                 # ~25 s (CI)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

from ..environment import cpu_model
from ..file_io import write_text


def noise_scale(dim):
    """Noise / identity-centre scale that puts the same-identity cosine similarity
    (1 / (1 + s^2)) at 3 standard deviations (1 / sqrt(dim)) of the others': Rank-1 ~0.85,
    mAP ~0.3-0.4 on both problem sizes (a moderately hard, Market-like task)."""
    return (dim ** 0.5 / 3.0 - 1.0) ** 0.5


def problem(Q, G, dim, ids, cams, seed=0):
    """Random query/gallery features around per-identity centres, with uniform ids/cameras."""
    import numpy as np
    import torch
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, ids, Q), rng.integers(0, ids, G)
    q_cams, g_cams = rng.integers(0, cams, Q), rng.integers(0, cams, G)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    feats = []
    for pids, n in ((q_pids, Q), (g_pids, G)):
        f = rng.standard_normal((n, dim), dtype=np.float32)
        f *= noise_scale(dim)
        f += centres[pids]
        feats.append(torch.from_numpy(f))
    return feats[0], feats[1], q_pids, g_pids, q_cams, g_cams


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def run_one(method, Q, G, dim, ids, cams, metric):
    """In a fresh process: seconds and peak extra resident memory of one evaluation."""
    import torch

    from .. import compat
    from . import compute_distance_matrix, evaluate_features, evaluate_rank
    torch.set_num_threads(os.cpu_count() or 1)
    qf, gf, qp, gp, qc, gc = problem(Q, G, dim, ids, cams)
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak-RSS counter (VmHWM)
        f.write("5")
    base_kb = _status_kb("VmRSS")
    t = time.perf_counter()
    if method == "ours_features":
        cmc, mAP = evaluate_features(qf, gf, qp, gp, qc, gc, metric)
    elif method == "ours_rank":
        d = compute_distance_matrix(qf, gf, metric).numpy()
        cmc, mAP = evaluate_rank(d, qp, gp, qc, gc)
    elif method == "torchreid":
        d = compat.metrics.compute_distance_matrix(qf, gf, metric).numpy()
        cmc, mAP = compat.metrics.evaluate_rank(d, qp, gp, qc, gc, use_cython=False)
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - t
    peak_mb = (_status_kb("VmHWM") - base_kb) / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "cmc": [float(x) for x in cmc],
            "mAP": float(mAP)}


def measure(method, *args):
    cmd = [sys.executable, "-m", "mpn_plugin.evaluation.benchmark", "--_one", method]
    cmd += [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def torchreid_peak_gb(Q, G, dist_bytes=4):
    """Peak of torchreid's eval_market1501: distmat + argsort int64 + g_pids[indices] int64 +
    the boolean comparison, all (Q, G) and alive together (the int32 matches come after the
    gather is freed and are smaller)."""
    return Q * G * (dist_bytes + 8 + 8 + 1) / 1e9


def hardware():
    import numpy
    import torch
    return (f"{os.cpu_count()} CPU cores ({cpu_model()}), no GPU used; Python "
            f"{platform.python_version()}, numpy {numpy.__version__}, torch {torch.__version__}")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/benchmark_evaluation.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI, ~25 s)")
    p.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"))
    p.add_argument("--out", default="", help="also write the Markdown report here")
    p.add_argument("--_one", nargs=7, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Run ``tools/benchmark_evaluation.py`` with ``argv`` (flags: :func:`build_parser`)."""
    a = build_parser().parse_args(argv)
    if a._one:
        m, *nums, metric = a._one
        print(json.dumps(run_one(m, *map(int, nums), metric)))
        return
    market = (400, 2000, 512, 100, 6) if a.quick else (3368, 15913, 512, 750, 6)
    msmt = (1000, 8000, 3072, 300, 15) if a.quick else (11659, 82161, 3072, 3060, 15)
    res = {m: measure(m, *market, a.metric) for m in ("torchreid", "ours_features", "ours_rank")}
    big = measure("ours_features", *msmt, a.metric)
    ref = res["torchreid"]
    n = len(ref["cmc"])

    def same(r):
        return r["cmc"][:n] == ref["cmc"] and abs(r["mAP"] - ref["mAP"]) < 1e-9

    def row(size, name, r, identical):
        return (f"| {size[0]:,} x {size[1]:,} | {name} | {r['seconds']:.2f} | {r['peak_mb']:,.0f} "
                f"| {r['cmc'][0]:.4f} | {r['mAP']:.4f} | {identical} |")

    Qm, Gm = msmt[:2]
    per_elem = ref["seconds"] / (market[0] * market[1])
    lines = [
        f"Command: `python tools/benchmark_evaluation.py{' --quick' if a.quick else ''}"
        f"{' --metric ' + a.metric if a.metric != 'cosine' else ''}`, "
        f"{datetime.date.today().isoformat()}; {hardware()}.",
        f"Random features ({a.metric} distance), identities/cameras uniform; time and peak memory "
        "include the distance computation; peak = extra resident memory over the inputs "
        "(fresh process per row, VmHWM reset).", "",
        "| problem | method | time (s) | peak extra memory (MB) | Rank-1 | mAP "
        "| identical to torchreid |",
        "|---|---|---|---|---|---|---|",
        row(market, "torchreid `evaluate_rank` (Python fallback)", ref, "reference"),
        row(market, "ours `evaluate_features` (chunked)", res["ours_features"],
            "yes" if same(res["ours_features"]) else "NO"),
        row(market, "ours `compute_distance_matrix` + `evaluate_rank`", res["ours_rank"],
            "yes" if same(res["ours_rank"]) else "NO"),
        row(msmt, "ours `evaluate_features` (chunked)", big, "not run (see below)"),
        "",
        f"Speed-up on the {market[0]:,} x {market[1]:,} problem: "
        f"{ref['seconds'] / res['ours_features']['seconds']:.0f}x (chunked, from features), "
        f"{ref['seconds'] / res['ours_rank']['seconds']:.0f}x (drop-in on a distance matrix).",
        f"torchreid on {Qm:,} x {Gm:,}: peak ~{torchreid_peak_gb(Qm, Gm):.1f} GB for a float32 "
        f"distance matrix (distmat 4 + argsort int64 8 + gathered pids int64 8 + bool 1 bytes "
        f"per pair; {torchreid_peak_gb(Qm, Gm, 8):.1f} GB with a float64 matrix), plus the "
        f"features; time extrapolated linearly from the row above: ~{per_elem * Qm * Gm / 60:.0f}"
        " min. Model check on the Market-sized row: predicted "
        f"{torchreid_peak_gb(*market[:2]) * 1000:,.0f} MB, measured {ref['peak_mb']:,.0f} MB.",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        write_text(a.out, text + "\n")
    if not (same(res["ours_features"]) and same(res["ours_rank"])):
        sys.exit("results differ from torchreid's")


if __name__ == "__main__":
    main()
