#!/usr/bin/env python
"""Generate the coarse priors (Sec. 3.2) of a dataset's images into one cache file.

Runs one tool adapter over the images in parallel (tqdm progress), resumable after an
interruption (finished chunks are kept beside the output and skipped on rerun), and prints a
summary: images, fallback fraction, images/s.

Examples::

    # a torchreid dataset (train split) with the synthetic dataset's own maps
    python tools/generate_priors.py --dataset synthetic_pedestrians --root data --adapter synthetic
    # your own parsing / mask outputs for Market-1501
    python tools/generate_priors.py --dataset market1501_prior --root /data --adapter parsing \
        --parsing-dir /data/market_parsing --mask-dir /data/market_masks
    # your own crops prepared by tools/prepare_dataset.py, mediapipe in its own env
    .venv-mediapipe/bin/python tools/generate_priors.py --manifest data/my_crops/manifest.csv \
        --adapter mediapipe --height 128 --width 64
    # a plain folder of crops with mediapipe (in its own env, see third_party/README.md)
    .venv-mediapipe/bin/python tools/generate_priors.py --images /path/to/crops --adapter mediapipe
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _load_priors_modules():
    """Import mpn_plugin.priors.{pipeline,cache,adapters} without importing mpn_plugin itself
    (which needs torch/torchreid), so this tool also runs in a torch-free prior environment."""
    try:
        import torch  # noqa: F401
        sys.path.insert(0, ROOT)
        from mpn_plugin.priors import adapters, cache, pipeline
        return pipeline, cache, adapters
    except ImportError:
        pass
    pkg = "mpn_priors_standalone"
    import types
    sys.modules[pkg] = types.ModuleType(pkg)
    sys.modules[pkg].__path__ = [osp.join(ROOT, "mpn_plugin", "priors")]
    mods = []
    for name in ("pipeline", "cache", "adapters"):
        spec = importlib.util.spec_from_file_location(f"{pkg}.{name}",
                                                      osp.join(ROOT, "mpn_plugin", "priors", name + ".py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return tuple(mods)


pipeline, cache_mod, adapters = _load_priors_modules()

_ADAPTER = None


def _init_worker(adapter):
    global _ADAPTER
    _ADAPTER = adapter


def _run_one(job):
    image_path, relpath, feature_size, cfg = job
    try:
        mask, case, info = _ADAPTER(image_path, relpath)
    except Exception as exc:  # a failing tool on one image must not lose the others
        mask, case, info = None, "fallback", {"error": f"{type(exc).__name__}: {exc}"}
    prior = pipeline.coarse_prior_from_mask(mask, feature_size, cfg)
    return relpath, mask, prior, info


def list_images(args):
    """(image root, [(abs path, relpath to the image root)], folder of the cache) of the images
    to process."""
    if args.manifest:  # read with csv only: this also runs in the torch-free prior environment
        import csv
        if not osp.isfile(args.manifest):
            raise SystemExit(f"--manifest '{args.manifest}' does not exist (tools/prepare_dataset.py writes it)")
        folder = osp.dirname(osp.abspath(args.manifest))
        with open(args.manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        absolute = [r["path"] if osp.isabs(r["path"]) else osp.normpath(osp.join(folder, r["path"]))
                    for r in rows]
        # same rule as mpn_plugin.data.manifest.common_image_root: the deepest folder of all images
        root = osp.commonpath([osp.dirname(p) for p in absolute])
        paths = sorted({p for p, r in zip(absolute, rows) if args.splits == "all" or r["split"] == "train"})
        return root, [(p, osp.relpath(p, root)) for p in paths], folder
    if args.images:
        root = osp.abspath(args.images)
        if not osp.isdir(root):
            raise SystemExit(f"--images '{root}' is not a folder")
        paths = sorted(p for p in glob.glob(osp.join(root, "**", "*"), recursive=True)
                       if p.lower().endswith(IMAGE_EXTS))
        return root, [(p, osp.relpath(p, root)) for p in paths], root
    import mpn_plugin  # noqa: F401  (registers the datasets)
    from mpn_plugin import compat
    modes = ["train"] if args.splits == "train" else ["train", "query", "gallery"]
    items, dataset_dir, image_root = {}, None, None
    for mode in modes:
        ds = compat.data.datasets.init_image_dataset(args.dataset, root=args.root, mode=mode,
                                                     transform=None, verbose=False)
        dataset_dir = ds.dataset_dir
        image_root = getattr(ds, "image_root", dataset_dir)
        for path, *_ in ds.data:
            items[path] = osp.relpath(path, image_root)
    return image_root, sorted(items.items()), dataset_dir


def build_adapter(args, dataset_dir):
    if args.adapter == "synthetic":
        return adapters.SyntheticMapsAdapter(dataset_dir)
    if args.adapter == "parsing":
        if not args.parsing_dir:
            raise SystemExit("--adapter parsing needs --parsing-dir (and optionally --mask-dir)")
        return adapters.ParsingFolderAdapter(args.parsing_dir, args.mask_dir)
    if args.adapter == "keypoints":
        if not args.keypoints_file:
            raise SystemExit("--adapter keypoints needs --keypoints-file")
        return adapters.KeypointsAdapter(args.keypoints_file, args.mask_dir)
    if args.adapter == "mediapipe":
        spec = importlib.util.spec_from_file_location(
            "mediapipe_adapter", osp.join(ROOT, "mpn_plugin", "priors", "mediapipe_adapter.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules["mediapipe_adapter"] = mod
        spec.loader.exec_module(mod)
        return mod.MediapipeAdapter(upscale=args.upscale)
    raise SystemExit(f"unknown adapter '{args.adapter}'")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered torchreid dataset name")
    src.add_argument("--images", help="a plain folder of images (searched recursively)")
    src.add_argument("--manifest", help="a manifest.csv of tools/prepare_dataset.py (cache goes beside it)")
    p.add_argument("--root", default="data", help="data root for --dataset")
    p.add_argument("--splits", choices=["train", "all"], default="train")
    p.add_argument("--adapter", choices=["synthetic", "parsing", "keypoints", "mediapipe"],
                   default="synthetic")
    p.add_argument("--parsing-dir", default="")
    p.add_argument("--mask-dir", default="")
    p.add_argument("--keypoints-file", default="")
    p.add_argument("--upscale", type=int, default=3, help="mediapipe: crop upscaling factor")
    p.add_argument("--height", type=int, default=256, help="model input height")
    p.add_argument("--width", type=int, default=128, help="model input width")
    p.add_argument("--stride", type=int, default=16, help="backbone feature stride")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="", help="default: <dataset dir>/priors_<adapter>_<Hf>x<Wf>.npz")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    feature_size = pipeline.feature_size_for((args.height, args.width), args.stride)
    dataset_dir, items, cache_dir = list_images(args)
    if not items:
        raise SystemExit(f"no images found for {args.dataset or args.manifest or args.images}")
    adapter = build_adapter(args, dataset_dir)
    out = args.out or osp.join(cache_dir, f"priors_{args.adapter}_{feature_size[0]}x{feature_size[1]}.npz")
    fingerprint = cache_mod.dataset_fingerprint(dataset_dir, [r for _, r in items])
    header = {"tool": adapter.name, "tool_version": adapter.version,
              "feature_size": list(feature_size), "fingerprint": fingerprint,
              "dataset_dir": dataset_dir, "config": vars(pipeline.PriorConfig())}
    header["config"] = {k: list(v) if isinstance(v, tuple) else v for k, v in header["config"].items()}
    if osp.exists(out):
        if not args.overwrite:
            try:
                c = cache_mod.PriorCache.load(out, adapter.name, adapter.version, feature_size, fingerprint)
                print(f"up-to-date prior cache '{out}': {c.summary()}")
                return c.summary()
            except cache_mod.StalePriorCacheError as exc:
                raise SystemExit(f"{exc}")
        os.remove(out)
    writer = cache_mod.PriorCacheWriter(out, header)
    todo = [(path, rel, feature_size, pipeline.PriorConfig()) for path, rel in items
            if rel not in writer.done]
    print(f"{len(items)} images ({len(items) - len(todo)} already done), adapter {adapter.name}, "
          f"feature size {feature_size}, {args.workers} workers -> {out}")
    from tqdm import tqdm
    start, errors = time.time(), 0
    reasons = {"no_head": 0, "no_legs": 0}

    def count(info):
        reasons["no_head"] += info.get("head") is False
        reasons["no_legs"] += info.get("legs") is False
        return "error" in info
    if args.workers > 1 and len(todo) > 1:
        from multiprocessing import get_context
        with get_context("fork").Pool(args.workers, _init_worker, (adapter,)) as pool:
            results = pool.imap(_run_one, todo, chunksize=16)
            for rel, mask, prior, info in tqdm(results, total=len(todo), desc="priors"):
                errors += count(info)
                writer.add(rel, mask, prior)
    else:
        _init_worker(adapter)
        for job in tqdm(todo, desc="priors"):
            rel, mask, prior, info = _run_one(job)
            errors += count(info)
            writer.add(rel, mask, prior)
    cache = writer.finish()
    seconds = time.time() - start
    summary = dict(cache.summary(), seconds=round(seconds, 1), tool_errors=errors, **reasons,
                   images_per_s=round(len(todo) / max(seconds, 1e-9), 1), path=out)
    print("summary: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
