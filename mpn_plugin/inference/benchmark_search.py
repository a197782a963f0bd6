"""Benchmark faiss gallery search at 10^4 - 10^6 vectors: build and query time, memory per
vector, and recall@1/@10 of the approximate index (IVF-PQ, optionally HNSW) against exact
search (and how often the first result is a copy of the query's own seed), plus a check that
two index shards merged at query time give one index's top-k.

Vectors (stated in the output): the seed features of a feature store written by
``tools/extract_features.py`` (real or synthetic crops, L2-normalised), extended to each size
by perturbed copies: gallery vector ``i`` is ``normalize(s[i mod S] + sigma * e_i)`` with
``e_i ~ N(0, I/D)`` (so ``||sigma * e_i|| ~ sigma``, relative to the unit-norm seed), drawn
chunk by chunk from a seeded generator; queries are fresh copies of random seeds (another
generator). Exact top-k is computed by streaming the chunks (never the whole gallery in
memory); the approximate index is trained on the first ``--train-size`` vectors (every seed is
represented evenly there, by construction) and filled chunk by chunk. At 10^6 x 3,072 the
float32 gallery would be 12 GB: only the PQ codes (~200 bytes/vector) are held.

Examples::

    # seed features (any model; the real ones come from a trained checkpoint):
    python tools/extract_features.py --config-file configs/mpn_synthetic.yaml \
        --checkpoint log/mpn_synthetic/model/model.pth.tar-12 \
        --images data/synthetic_pedestrians/bounding_box_test --out features/seed
    python tools/benchmark_gallery_search.py --seed-features features/seed \
        --sizes 10000 100000 1000000 --out results/gallery_search
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import tempfile
import time

import numpy as np

from ..file_io import write_json, write_text
from ..progress import progress_bar as tqdm  # throttled in logs
from .feature_store import FeatureStore
from .gallery_index import GalleryIndex, default_nlist, index_factory_string, search_sharded

CHUNK = 10_000


class PerturbedGallery:
    """Deterministic, chunked gallery of perturbed seed copies (see the module docstring)."""

    def __init__(self, seeds: np.ndarray, size: int, sigma: float, seed: int = 0):
        self.seeds, self.size, self.sigma, self.seed = seeds, int(size), float(sigma), seed
        self.dim = seeds.shape[1]

    def _copies(self, seed_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal((len(seed_rows), self.dim), dtype=np.float32)
        x = self.seeds[seed_rows] + (self.sigma / np.sqrt(self.dim)) * noise
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def chunks(self, limit=None):
        """Yield (start, (n, D) float32) chunks of the first ``limit`` (default all) vectors."""
        end = self.size if limit is None else min(limit, self.size)
        for c, start in enumerate(range(0, end, CHUNK)):
            rows = np.arange(start, min(start + CHUNK, end)) % len(self.seeds)
            yield start, self._copies(rows, np.random.default_rng([self.seed, c]))

    def queries(self, n: int):
        """(n, D) queries and the seed row each one copies."""
        rng = np.random.default_rng([self.seed, 1 << 30])
        rows = rng.integers(0, len(self.seeds), n)
        return self._copies(rows, rng), rows


def exact_topk(gallery: PerturbedGallery, queries: np.ndarray, k: int):
    """Exact (scores, ids) by streaming the gallery through IndexFlatIP chunks."""
    import faiss
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for start, x in gallery.chunks():
        index = faiss.IndexFlatIP(gallery.dim)
        index.add(x)
        s, i = index.search(queries, min(k, len(x)))
        heap.add_result(s, i + start)
    heap.finalize()
    return heap.D, heap.I


def bytes_per_vector(index: GalleryIndex, work_dir: str) -> float:
    import faiss
    path = osp.join(work_dir, "index.faiss")
    faiss.write_index(index.index, path)
    size = osp.getsize(path)
    os.remove(path)
    return size / max(index.ntotal, 1)


def recall(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """k-recall@k: mean fraction of the exact top-k found in the approximate top-k (k = 1:
    the exact nearest neighbour is the approximate first result)."""
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


def same_seed_at_1(ids: np.ndarray, query_seeds: np.ndarray, num_seeds: int) -> float:
    """Share of queries whose first result is a copy of the query's own seed (the benchmark's
    stand-in for a correct Rank-1): insensitive to which of the near-tied copies comes first."""
    return float(np.mean(ids[:, 0] % num_seeds == query_seeds))


def merge_check(gallery: PerturbedGallery, queries: np.ndarray, k: int) -> dict:
    """Two flat shards (first / second half) searched with :func:`search_sharded` vs one flat
    index over everything."""
    one = GalleryIndex.create(gallery.dim, "Flat")
    halves = [GalleryIndex.create(gallery.dim, "Flat") for _ in range(2)]
    half = gallery.size // 2
    for start, x in gallery.chunks():
        one.index.add(x)                 # vectors only: the benchmark needs no items
        cut = int(np.clip(half - start, 0, len(x)))
        halves[0].index.add(x[:cut])
        halves[1].index.add(x[cut:])
    s1, i1 = one.search(queries, k)
    s2, i2, _ = search_sharded(halves, queries, k)
    return {"size": gallery.size, "shards": [h.ntotal for h in halves], "queries": len(queries),
            "k": k, "identical_topk_ids": bool(np.array_equal(i1, i2)),
            "queries_with_identical_topk": float(np.mean((i1 == i2).all(1))),
            "max_abs_score_diff": float(np.abs(s1 - s2).max())}


def run_size(gallery, queries, query_seeds, args, work_dir):
    rows = []
    num_seeds = len(gallery.seeds)
    t = time.perf_counter()
    exact_s, exact_i = exact_topk(gallery, queries, args.topk)
    exact_time = time.perf_counter() - t
    rows.append({"size": gallery.size, "index": "exact (streamed IndexFlatIP)", "nprobe": "",
                 "build_s": 0.0, "query_ms": 1e3 * exact_time / len(queries),
                 "bytes_per_vector": 4.0 * gallery.dim, "recall@1": 1.0, "recall@10": 1.0,
                 "same_seed@1": same_seed_at_1(exact_i, query_seeds, num_seeds)})
    for kind in args.index_types:
        if kind == "hnsw" and gallery.size * gallery.dim * 4 > args.max_full_bytes:
            print(f"[benchmark] skip hnsw at {gallery.size}: full vectors exceed "
                  f"--max-full-bytes {args.max_full_bytes}")
            continue
        nlist = args.nlist or default_nlist(gallery.size)
        factory = index_factory_string(kind, gallery.dim, gallery.size, nlist=nlist,
                                       pq_m=args.pq_m)
        index = GalleryIndex.create(gallery.dim, factory)
        t = time.perf_counter()
        if not index.is_trained:
            sample = np.concatenate([x for _, x in gallery.chunks(args.train_size)])
            index.train(sample)
            del sample
        for _, x in tqdm(gallery.chunks(), desc=f"add {factory}", leave=False, disable=None):
            index.index.add(x)
        build = time.perf_counter() - t
        per_vec = bytes_per_vector(index, work_dir)
        for nprobe in (args.nprobe or [max(1, nlist // 16)]) if "IVF" in factory else [""]:
            index.info["nprobe"] = nprobe or None
            t = time.perf_counter()
            _, ids = index.search(queries, args.topk)
            q_ms = 1e3 * (time.perf_counter() - t) / len(queries)
            rows.append({"size": gallery.size, "index": factory, "nprobe": nprobe,
                         "build_s": build, "query_ms": q_ms, "bytes_per_vector": per_vec,
                         "recall@1": recall(ids, exact_i, 1),
                         "recall@10": recall(ids, exact_i, min(10, args.topk)),
                         "same_seed@1": same_seed_at_1(ids, query_seeds, num_seeds)})
        del index
    return rows


def markdown(rows, method: str) -> str:
    lines = [method, "", "| gallery vectors | index | nprobe | build (s) | query (ms/query) | "
             "bytes/vector | recall@1 | recall@10 | same-seed top-1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']:,} | {r['index']} | {r['nprobe']} | {r['build_s']:.1f} | "
                     f"{r['query_ms']:.2f} | {r['bytes_per_vector']:.0f} | {r['recall@1']:.3f} | "
                     f"{r['recall@10']:.3f} | {r['same_seed@1']:.3f} |")
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples::")[1])
    p.add_argument("--seed-features", required=True,
                   help="feature store of real or synthetic crops (tools/extract_features.py)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--sigma", type=float, default=0.5,
                   help="noise norm of a perturbed copy, relative to the unit-norm seed")
    p.add_argument("--index-types", nargs="+", default=["ivfpq"], choices=["ivfpq", "hnsw"])
    p.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~sqrt(N))")
    p.add_argument("--pq-m", type=int, default=None, help="PQ bytes per vector (default D/16)")
    p.add_argument("--nprobe", type=int, nargs="*", default=None,
                   help="IVF cells searched, one row each (default nlist/16)")
    p.add_argument("--train-size", type=int, default=65_536, help="IVF-PQ training vectors")
    p.add_argument("--max-full-bytes", type=float, default=4e9,
                   help="skip indexes holding full vectors (hnsw) above this size")
    p.add_argument("--merge-size", type=int, default=10_000,
                   help="gallery size of the two-shard merge check (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder (benchmark.json, benchmark.md)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if not osp.isfile(osp.join(args.seed_features, "meta.json")):
        raise SystemExit(f"--seed-features {args.seed_features}: not a feature store. Make one "
                         "with python tools/extract_features.py --config-file CONFIG "
                         "--checkpoint CKPT --images DIR --out " + args.seed_features)
    seeds, _ = FeatureStore(args.seed_features).load()
    seeds = seeds / np.linalg.norm(seeds, axis=1, keepdims=True)
    method = (f"Vectors: {len(seeds)} seed features of dimension {seeds.shape[1]} from "
              f"`{args.seed_features}`, extended by perturbed copies normalize(seed + "
              f"{args.sigma} * e), e ~ N(0, I/D) (noise norm {args.sigma} relative to the seed); "
              f"{args.queries} queries = fresh perturbed copies of random seeds; exact top-"
              f"{args.topk} by streamed IndexFlatIP. recall@k = mean fraction of the exact top-k "
              f"in the approximate top-k; same-seed top-1 = share of queries whose first result "
              f"is a copy of the query's own seed (a stand-in for a correct Rank-1).")
    print(method)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.out) as work_dir:
        for size in args.sizes:
            gallery = PerturbedGallery(seeds, size, args.sigma, args.seed)
            rows += run_size(gallery, *gallery.queries(args.queries), args, work_dir)
            print(markdown([r for r in rows if r["size"] == size], "").strip())
    report = {"method": method, "args": vars(args), "rows": rows}
    if args.merge_size:
        gallery = PerturbedGallery(seeds, args.merge_size, args.sigma, args.seed)
        report["merge_check"] = merge_check(gallery, gallery.queries(args.queries)[0], args.topk)
        print("[benchmark] two-shard merge check:", json.dumps(report["merge_check"]))
    write_json(osp.join(args.out, "benchmark.json"), report)
    write_text(osp.join(args.out, "benchmark.md"), markdown(rows, method))
    print(f"[benchmark] wrote {osp.join(args.out, 'benchmark.md')} and benchmark.json")
    return report


if __name__ == "__main__":
    main()
