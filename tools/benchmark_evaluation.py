#!/usr/bin/env python
"""Evaluation cost: our vectorised, chunked CMC/mAP vs torchreid's Python fallback.

Market-sized random problem (3,368 x 15,913): both, time and peak memory (each in a fresh
subprocess; peak = maximum resident set size growth over the process baseline), results
checked equal. MSMT17-sized (11,659 x 82,161, 3,072-d features): ours only; torchreid's need
is estimated (it builds the full float64 distance matrix, its argsort indices and the boolean
match matrix).

Examples::

    python tools/benchmark_evaluation.py            # Market + MSMT17 sizes
    python tools/benchmark_evaluation.py --quick    # small sizes (CI)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def problem(Q, G, dim, seed=0, ids=750, cams=6):
    import numpy as np
    import torch
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, ids, G)
    q_pids = rng.integers(0, ids, Q)
    centers = rng.standard_normal((ids, dim)).astype(np.float32)
    qf = centers[q_pids] + 2.0 * rng.standard_normal((Q, dim)).astype(np.float32)
    gf = centers[g_pids] + 2.0 * rng.standard_normal((G, dim)).astype(np.float32)
    return (torch.from_numpy(qf), torch.from_numpy(gf), q_pids, g_pids,
            rng.integers(0, cams, Q), rng.integers(0, cams, G))


def run_one(method, Q, G, dim):
    """In a fresh process: time and peak-RSS growth of one evaluation."""
    sys.path.insert(0, ROOT)
    import mpn_plugin  # noqa: F401
    from mpn_plugin import compat
    from mpn_plugin.evaluation import evaluate_features
    qf, gf, qp, gp, qc, gc = problem(Q, G, dim)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if method == "ours":
        cmc, mAP = evaluate_features(qf, gf, qp, gp, qc, gc, "cosine")
    else:
        d = compat.metrics.compute_distance_matrix(qf, gf, "cosine").numpy()
        cmc, mAP = compat.metrics.evaluate_rank(d, qp, gp, qc, gc, use_cython=False)
    seconds = time.perf_counter() - t
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "rank1": float(cmc[0]), "mAP": float(mAP)}


def measure(method, Q, G, dim):
    out = subprocess.run([sys.executable, __file__, "--_one", method, str(Q), str(G), str(dim)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="")
    p.add_argument("--_one", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._one:
        m, Q, G, dim = a._one
        print(json.dumps(run_one(m, int(Q), int(G), int(dim))))
        return
    market = (400, 2000, 512) if a.quick else (3368, 15913, 512)
    msmt = (1000, 8000, 3072) if a.quick else (11659, 82161, 3072)
    ours, theirs = measure("ours", *market), measure("torchreid", *market)
    big = measure("ours", *msmt)
    Qm, Gm, _ = msmt
    est_gb = (Qm * Gm * (8 + 8 + 1 + 4)) / 1e9  # float64 dist + int64 argsort + bool matches + float32
    lines = [
        "| problem | method | time (s) | peak memory (MB) | Rank-1 | mAP |", "|---|---|---|---|---|---|",
        f"| {market[0]} x {market[1]} | ours (chunked, vectorised) | {ours['seconds']:.2f} | {ours['peak_mb']:.0f} | {ours['rank1']:.4f} | {ours['mAP']:.4f} |",
        f"| {market[0]} x {market[1]} | torchreid Python fallback | {theirs['seconds']:.2f} | {theirs['peak_mb']:.0f} | {theirs['rank1']:.4f} | {theirs['mAP']:.4f} |",
        f"| {msmt[0]} x {msmt[1]} | ours | {big['seconds']:.2f} | {big['peak_mb']:.0f} | {big['rank1']:.4f} | {big['mAP']:.4f} |",
        f"| {msmt[0]} x {msmt[1]} | torchreid Python fallback | not run | ~{est_gb * 1000:.0f} (estimate) | | |",
        "", f"Speed-up on the Market-sized problem: {theirs['seconds'] / ours['seconds']:.1f}x; "
        f"identical results: {abs(ours['mAP'] - theirs['mAP']) < 1e-6 and abs(ours['rank1'] - theirs['rank1']) < 1e-6}"]
    print("\n".join(lines))
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
