"""Build a faiss gallery index from feature shards, and search it (top-k with scores).

``build`` makes (or extends: only new shards are added) an index folder from feature stores
of ``tools/extract_features.py``: exact ``flat`` (IndexFlatIP) up to 100,000 vectors,
``ivfpq`` above, or as ``--index-type`` says. ``query`` searches one index, or several as one
(top-k of each merged at query time), with queries from a feature store or from images (then
the model options are needed); it writes ``results.csv`` (query, rank, gallery image, score),
``summary.json`` (with the evaluator's CMC when identities are known on both sides) and, with
``--visualize``, one PNG per query in torchreid's visrank style.

Examples::

    python tools/search_gallery.py build --features features/gallery --index index/gallery
    python tools/search_gallery.py query --index index/gallery \
        --config-file configs/mpn_synthetic.yaml \
        --checkpoint log/mpn_synthetic/model/model.pth.tar-12 \
        --query-images data/synthetic_pedestrians/query --query-preset market1501 \
        --topk 10 --visualize --out results/search
    # several index shards (e.g. one per day or per machine), queries from a feature store:
    python tools/search_gallery.py query --index index/day1 index/day2 \
        --queries features/query --out results/search
"""
from __future__ import annotations

import argparse
import csv
import os
import os.path as osp

import numpy as np

from ..file_io import save_atomically, write_json
from .extract import add_image_arguments, add_model_arguments, build_extractor, collect_items
from .feature_store import FeatureStore
from .gallery_index import (
    INDEX_TYPES,
    GalleryIndex,
    build_gallery_index,
    search_cmc,
    search_sharded,
)
from .visrank import draw_ranked_results


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples::")[1])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or extend an index from feature stores")
    b.add_argument("--features", nargs="+", required=True, help="feature-store folders")
    b.add_argument("--index", required=True, help="index folder (extended if it exists)")
    b.add_argument("--index-type", default="auto", choices=INDEX_TYPES,
                   help="auto: flat up to 100,000 vectors, ivfpq above")
    b.add_argument("--nlist", type=int, default=None, help="IVF cells (default ~sqrt(N))")
    b.add_argument("--pq-m", type=int, default=None, help="PQ bytes per vector (default D/16)")
    b.add_argument("--nprobe", type=int, default=None, help="IVF cells searched (nlist/16)")
    b.add_argument("--hnsw-m", type=int, default=32)
    b.add_argument("--ef-search", type=int, default=64)
    b.add_argument("--train-size", type=int, default=None, help="IVF-PQ training sample")
    q = sub.add_parser("query", help="top-k search of queries")
    q.add_argument("--index", nargs="+", required=True,
                   help="index folder(s); several are searched as one (merged top-k)")
    q.add_argument("--queries", default=None, help="feature store of the queries")
    add_image_arguments(q, prefix="query-")
    add_model_arguments(q)
    q.add_argument("--topk", type=int, default=10)
    q.add_argument("--nprobe", type=int, default=None, help="override the index's nprobe")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--visualize", action="store_true", help="one PNG per query (visrank)")
    q.add_argument("--vis-width", type=int, default=128)
    q.add_argument("--vis-height", type=int, default=256)
    return p


def query_features(args, indexes):
    """(features (Q, D), rows) of the queries, from a store or extracted now; the model must
    be the one the gallery was indexed with."""
    if args.queries:
        store = FeatureStore(args.queries)
        feats, rows = store.load()
        model = store.meta["model"]
    else:
        items, _ = collect_items(args, prefix="query-")
        extractor = build_extractor(args)
        result = extractor.extract([it.path for it in items], skip_unreadable=args.skip_unreadable)
        for _, name, reason in result.skipped:
            print(f"[search] skipped query {name}: {reason}")
        feats = result.features.numpy()
        rows = [{"path": items[i].path, "pid": items[i].pid, "camid": items[i].camid}
                for i in result.indices]
        model = extractor.metadata
    for index in indexes:
        index.check_model(model, "the queries")
    return feats, rows


def run_query(args) -> dict:
    indexes = [GalleryIndex.load(p) for p in args.index]
    for index in indexes:
        if args.nprobe:
            index.info["nprobe"] = args.nprobe
    feats, rows = query_features(args, indexes)
    scores, ids, items = search_sharded(indexes, feats, args.topk)
    os.makedirs(args.out, exist_ok=True)

    def write_csv(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("query", "query_pid", "rank", "gallery", "gallery_pid", "gallery_camid",
                        "score"))
            for qi, row in enumerate(rows):
                for r, (gid, s) in enumerate(zip(ids[qi], scores[qi])):
                    if gid >= 0:
                        g = items[gid]
                        w.writerow((row["path"], row["pid"], r + 1, g[0], g[1], g[2],
                                    f"{s:.6f}"))
    save_atomically(write_csv, osp.join(args.out, "results.csv"))
    summary = {"num_queries": len(rows), "gallery_size": len(items), "topk": args.topk,
               "indexes": [dict(path=p, factory=i.info["factory"], ntotal=i.ntotal)
                           for p, i in zip(args.index, indexes)]}
    q_pids = np.array([r["pid"] for r in rows])
    g_pids = np.array([it[1] for it in items])
    if len(rows) and (q_pids >= 0).any() and (g_pids >= 0).any():
        cmc = search_cmc(lambda k: search_sharded(indexes, feats, k)[1], q_pids,
                         np.array([r["camid"] for r in rows]), g_pids,
                         np.array([it[2] for it in items]), max_rank=args.topk)
        summary["cmc"] = cmc
        print(f"[search] Rank-1 {cmc['rank1']:.1%} over {cmc['num_valid']} queries with a match "
              "(evaluator's protocol: same identity and camera removed)")
    if args.visualize:
        vis_dir = osp.join(args.out, "visrank")
        for qi, row in enumerate(rows):
            keep = [j for j in range(len(ids[qi])) if ids[qi][j] >= 0]
            stem = osp.splitext(osp.basename(row["path"]))[0]
            draw_ranked_results(row["path"], [items[ids[qi][j]][0] for j in keep],
                                [float(scores[qi][j]) for j in keep],
                                osp.join(vis_dir, f"{qi:05d}_{stem}.png"), query_pid=row["pid"],
                                gallery_pids=[items[ids[qi][j]][1] for j in keep],
                                width=args.vis_width, height=args.vis_height)
        summary["visrank_dir"] = vis_dir
        print(f"[search] {len(rows)} ranked-result figures in {vis_dir}")
    write_json(osp.join(args.out, "summary.json"), summary)
    print(f"[search] top-{args.topk} of {len(rows)} queries in {osp.join(args.out, 'results.csv')}")
    return summary


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.command == "build":
        index = build_gallery_index(args.features, args.index, args.index_type, args.nlist,
                                    args.pq_m, args.nprobe, args.hnsw_m, args.ef_search,
                                    args.train_size)
        print(f"[index] {args.index}: {index.info['factory']}, {index.ntotal} vectors")
        return {"index": args.index, "factory": index.info["factory"], "ntotal": index.ntotal}
    if (args.queries is None) == (args.query_images is None and args.query_manifest is None):
        raise SystemExit("give --queries STORE, or --query-images / --query-manifest with the "
                         "model options")
    return run_query(args)


if __name__ == "__main__":
    main()
