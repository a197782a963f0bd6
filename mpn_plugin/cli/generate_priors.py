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
    # any registered dataset with the built-in mediapipe generator: the images are listed here,
    # mediapipe runs in .venv-mediapipe (bash third_party/mediapipe_env.sh creates it)
    python tools/generate_priors.py --dataset market1501_prior --root /data --adapter mediapipe
    # labels you already have: bpbreid's PifPaf .npy, KPR keypoint JSONs, SCHP parsing PNGs
    python tools/generate_priors.py --dataset market1501_prior --root /data --adapter bpbreid \
        --part-masks-dir /data/market1501/Market-1501-v15.09.15/masks/pifpaf_maskrcnn_filtering
    KPR=/data/Occluded_Duke/external_annotation
    python tools/generate_priors.py --dataset occluded_duke_prior --root /data --adapter kpr \
        --keypoints-dir $KPR/pifpaf_keypoints_pifpaf_maskrcnn_filtering
    python tools/generate_priors.py --dataset market1501_prior --root /data --adapter parsing \
        --parsing-dir /data/market_schp_atr --labels atr
    # your own crops prepared by tools/prepare_dataset.py, mediapipe in its own env
    .venv-mediapipe/bin/python tools/generate_priors.py --manifest data/my_crops/manifest.csv \
        --adapter mediapipe --height 128 --width 64
    # a plain folder of crops (inside a standard dataset folder, the cache goes to that folder)
    .venv-mediapipe/bin/python tools/generate_priors.py --images /path/to/crops --adapter mediapipe

Progress is a tqdm bar on a terminal and one line per 5% (at most one per 30 s) in a log file.
The cache header records the command (printed by errors) and why each fallback image fell back
(read by tools/priors_report.py).
"""
from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import json
import os
import os.path as osp
import shlex
import subprocess
import sys
import tempfile
import time

from .. import progress
from ..environment import TORCH_AVAILABLE
from ..file_io import write_json
from ..priors import adapters, commands, importers, pipeline
from ..priors import cache as cache_mod

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
#: Without torch/torchreid (the prior environment) a registered dataset is listed by the
#: training environment's python.
TORCH_FREE = not TORCH_AVAILABLE

_ADAPTER = None


def _init_worker(adapter):
    global _ADAPTER
    _ADAPTER = adapter


def _run_one(job):
    image_path, relpath, feature_size, cfg = job
    try:
        mask, _, info = _ADAPTER(image_path, relpath)
    except Exception as exc:  # a failing tool on one image must not lose the others
        mask, info = None, {"error": f"{type(exc).__name__}: {exc}"}
    prior = pipeline.coarse_prior_from_mask(mask, feature_size, cfg)
    return relpath, mask, prior, info


def list_images(args):
    """(image root, [(abs path, relpath to the image root)], folder of the cache) of the images
    to process."""
    if args.manifest:  # read with csv only: this also runs in the torch-free prior environment
        import csv
        if not osp.isfile(args.manifest):
            raise SystemExit(f"--manifest '{args.manifest}' does not exist "
                             f"(tools/prepare_dataset.py writes it)")
        folder = osp.dirname(osp.abspath(args.manifest))
        with open(args.manifest, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
            rows = list(csv.DictReader(f))
        absolute = [r["path"] if osp.isabs(r["path"]) else osp.normpath(osp.join(folder, r["path"]))
                    for r in rows]
        # same rule as mpn_plugin.data.manifest.common_image_root: the deepest folder of all images
        root = osp.commonpath([osp.dirname(p) for p in absolute])
        paths = sorted({p for p, r in zip(absolute, rows)
                        if args.splits == "all" or r["split"] == "train"})
        return root, [(p, osp.relpath(p, root)) for p in paths], folder
    if args.file_list:
        return read_file_list(args.file_list)
    if args.images:
        folder = osp.abspath(args.images)
        if not osp.isdir(folder):
            raise SystemExit(f"--images '{folder}' is not a folder")
        paths = sorted(p for p in glob.glob(osp.join(folder, "**", "*"), recursive=True)
                       if p.lower().endswith(IMAGE_EXTS))
        # inside a standard dataset folder (e.g. <root>/market1501/.../bounding_box_train):
        # cache and keys relative to that folder, which is where training looks
        standard = commands.standard_dataset_dir(folder)
        root = standard[0] if standard else folder
        if standard and root != folder:
            print(f"--images is inside the {standard[1]} dataset folder '{root}': the cache goes "
                  f"there, keyed by image paths relative to it (what training looks up)")
        return root, [(p, osp.relpath(p, root)) for p in paths], root
    if TORCH_FREE:  # torchreid lists the dataset: ask the training environment
        return list_in_training_env(args)
    from .. import compat
    from ..registry import register
    register()  # the datasets, as at ``import mpn_plugin``
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


def write_file_list(path, image_root, items, cache_dir, command=""):
    """Save a listing of :func:`list_images` as JSON (read back by ``--file-list``)."""
    write_json(path, {"image_root": image_root, "cache_dir": cache_dir, "command": command,
                      "items": [list(i) for i in items]}, indent=None)


def read_file_list(path):
    """(image root, [(abs path, relpath)], cache folder) of a ``--file-list`` JSON."""
    try:
        with open(path) as f:
            d = json.load(f)
        return d["image_root"], [tuple(i) for i in d["items"]], d["cache_dir"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--file-list '{path}' is not a file list written by "
                         f"generate_priors.py --list-only ({type(exc).__name__}: {exc})") from None


def _run_tool(python, tool_args, what):
    """Run this tool with another interpreter; SystemExit with its exit code on failure."""
    cmd = [python, commands.TOOL] + tool_args
    rc = subprocess.call(cmd)
    if rc:
        raise SystemExit(f"{what} failed (exit code {rc}): {' '.join(shlex.quote(c) for c in cmd)}")


def list_in_training_env(args):
    """List a registered dataset's images with the training environment's python (this one has
    no torch/torchreid)."""
    python = os.environ.get("MPN_PYTHON") or commands.MAIN_PYTHON
    if not osp.isfile(python):
        raise SystemExit(
            f"--dataset {args.dataset} needs torchreid to list the dataset's images, and this "
            f"python ({sys.executable}) has none, nor is there a training environment at "
            f"'{commands.MAIN_PYTHON}' (set MPN_PYTHON to its python). Run the command with the "
            f"training environment instead: it hands the mediapipe stage to .venv-mediapipe "
            f"itself: python tools/generate_priors.py --dataset {args.dataset} --root {args.root} "
            f"--adapter {args.adapter}")
    with tempfile.TemporaryDirectory() as tmp:
        listing = osp.join(tmp, "images.json")
        _run_tool(python, ["--dataset", args.dataset, "--root", args.root, "--splits", args.splits,
                           "--adapter", args.adapter, "--list-only", listing],
                  f"listing the images of {args.dataset}")
        return read_file_list(listing)


def mediapipe_python(args):
    """The interpreter of the mediapipe environment (``--mediapipe-python``,
    ``$MPN_MEDIAPIPE_PYTHON`` or ``.venv-mediapipe``), or SystemExit saying how to create it."""
    python = (args.mediapipe_python or os.environ.get("MPN_MEDIAPIPE_PYTHON")
              or commands.MEDIAPIPE_PYTHON)
    if not osp.isfile(python):
        script = osp.join(commands.REPO_ROOT, "third_party", "mediapipe_env.sh")
        raise SystemExit(f"--adapter mediapipe: this python ({sys.executable}) has no mediapipe "
                         f"and there is no mediapipe environment at '{python}'. Create it once "
                         f"with: bash {script} (then rerun this command as it is)")
    return python


def run_in_mediapipe_env(args):
    """List the images here, run the generation in the mediapipe environment on that list."""
    python = mediapipe_python(args)
    image_root, items, cache_dir = list_images(args)
    if not items:
        raise SystemExit(f"no images found for {args.dataset or args.manifest or args.images}")
    forwarded = ["--adapter", "mediapipe", "--upscale", str(args.upscale), "--height",
                 str(args.height), "--width", str(args.width), "--stride", str(args.stride),
                 "--workers", str(args.workers),
                 "--max-fallback-share", str(args.max_fallback_share)]
    feature_size = pipeline.feature_size_for((args.height, args.width), args.stride)
    out = args.out or osp.join(cache_dir,
                               f"priors_mediapipe_{feature_size[0]}x{feature_size[1]}.npz")
    forwarded += ["--out", out] + (["--overwrite"] if args.overwrite else [])
    print(f"{len(items)} images listed here; mediapipe runs in {python}")
    with tempfile.TemporaryDirectory() as tmp:
        listing = osp.join(tmp, "images.json")
        write_file_list(listing, image_root, items, cache_dir, regenerate_command(args))
        _run_tool(python, ["--file-list", listing] + forwarded, "the mediapipe stage")
    return cache_mod.PriorCache.load(out).summary()


def read_file_list_command(path):
    """The regenerate command a ``--file-list`` JSON carries ("" if none)."""
    with open(path) as f:
        return json.load(f).get("command", "")


def regenerate_command(args):
    """The command line that makes this cache again (stored in its header, printed by errors)."""
    extra = []
    for flag, value in (("--parsing-dir", args.parsing_dir), ("--mask-dir", args.mask_dir),
                        ("--keypoints-file", args.keypoints_file),
                        ("--keypoints-dir", args.keypoints_dir),
                        ("--part-masks-dir", args.part_masks_dir)):
        if value:
            extra += [flag, osp.abspath(value)]
    if args.adapter == "parsing" and args.labels != "lip":
        extra += ["--labels", args.labels]
    if args.stride != 16:
        extra += ["--stride", str(args.stride)]
    if args.dataset:
        return commands.generate_priors_command(args.dataset, args.root, args.height, args.width,
                                                args.adapter, extra=extra)
    source = (["--manifest", osp.abspath(args.manifest)] if args.manifest else
              ["--images", osp.abspath(args.images)] if args.images else [])
    cmd = [commands.python_command(), commands.TOOL] + source + [
        "--adapter", args.adapter, "--height", str(args.height), "--width", str(args.width)] + extra
    return " ".join(shlex.quote(c) for c in cmd)


def build_adapter(args, dataset_dir):
    if args.adapter == "synthetic":
        return adapters.SyntheticMapsAdapter(dataset_dir)
    if args.adapter == "parsing":
        if not args.parsing_dir:
            raise SystemExit("--adapter parsing needs --parsing-dir (and optionally --mask-dir)")
        return adapters.ParsingFolderAdapter(args.parsing_dir, args.mask_dir,
                                             config=pipeline.PriorConfig.preset(args.labels))
    if args.adapter == "bpbreid":
        if not args.part_masks_dir:
            raise SystemExit("--adapter bpbreid needs --part-masks-dir (e.g. <dataset>/masks/"
                             "pifpaf_maskrcnn_filtering)")
        return importers.BpbreidPartMasksAdapter(args.part_masks_dir)
    if args.adapter == "kpr":
        if not args.keypoints_dir:
            raise SystemExit("--adapter kpr needs --keypoints-dir (e.g. <dataset>/"
                             "external_annotation/pifpaf_keypoints_pifpaf_maskrcnn_filtering)")
        return importers.KprKeypointsAdapter(args.keypoints_dir, args.mask_dir)
    if args.adapter == "keypoints":
        if not args.keypoints_file:
            raise SystemExit("--adapter keypoints needs --keypoints-file")
        return adapters.KeypointsAdapter(args.keypoints_file, args.mask_dir)
    if args.adapter == "mediapipe":
        mod = importlib.import_module("mpn_plugin.priors.mediapipe_adapter")
        return mod.MediapipeAdapter(upscale=args.upscale)
    raise SystemExit(f"unknown adapter '{args.adapter}'")


def check_fallback_share(summary, max_share, out):
    """``summary``, or SystemExit when more than ``max_share`` of the images fell back."""
    if summary["fallback_fraction"] <= max_share:
        return summary
    raise SystemExit(
        f"ERROR: {summary['fallbacks']} of {summary['images']} images "
        f"({summary['fallback_fraction']:.0%}) got the fallback prior (no person evidence), more "
        f"than --max-fallback-share {max_share}. The tool outputs are probably not matched to the "
        f"images: a wrong --parsing-dir / --mask-dir / --keypoints-file, or maps not named "
        f"<folder>/<image path without extension>.png. The cache '{out}' was kept, but training "
        f"on it learns little from priors: fix the input and rerun with --overwrite, or accept "
        f"it with --max-fallback-share 1.")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/generate_priors.py`` (``mpn-priors``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a registered torchreid dataset name")
    src.add_argument("--images", help="a plain folder of images (searched recursively)")
    src.add_argument("--manifest",
                     help="a manifest.csv of tools/prepare_dataset.py (cache goes beside it)")
    src.add_argument("--file-list", help="a JSON image list written by --list-only")
    p.add_argument("--root", default="data", help="data root for --dataset")
    p.add_argument("--splits", choices=["train", "all"], default="train")
    p.add_argument("--adapter", choices=["synthetic", "parsing", "keypoints", "mediapipe",
                                         "bpbreid", "kpr"], default="synthetic")
    p.add_argument("--parsing-dir", default="", help="parsing: label maps (e.g. SCHP's PNGs)")
    p.add_argument("--labels", choices=sorted(pipeline.LABEL_PRESETS), default="lip",
                   help="parsing: label set of the maps (PriorConfig.preset)")
    p.add_argument("--mask-dir", default="", help="parsing / keypoints / kpr: foreground masks")
    p.add_argument("--keypoints-file", default="",
                   help="keypoints: one JSON {relpath: 17 x [x, y, s]}")
    p.add_argument("--keypoints-dir", default="", help="kpr: folder of KPR keypoint JSONs")
    p.add_argument("--part-masks-dir", default="",
                   help="bpbreid: folder of 36-channel PifPaf .npy files")
    p.add_argument("--mediapipe-python", default="",
                   help="mediapipe: the python of its environment (default .venv-mediapipe)")
    p.add_argument("--list-only", default="", metavar="JSON",
                   help="only write the image list (for --file-list) and exit")
    p.add_argument("--upscale", type=int, default=3, help="mediapipe: crop upscaling factor")
    p.add_argument("--height", type=int, default=256, help="model input height")
    p.add_argument("--width", type=int, default=128, help="model input width")
    p.add_argument("--stride", type=int, default=16, help="backbone feature stride")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="",
                   help="default: <dataset dir>/priors_<adapter>_<Hf>x<Wf>.npz")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild from scratch: replaces the cache, discards an unfinished run")
    p.add_argument("--max-fallback-share", type=float, default=0.5,
                   help="exit with an error (the cache is kept) when a larger share of the images "
                        "gets the fallback prior: tool outputs not matched to the images")
    return p


def main(argv=None):
    """Generate a prior cache as the command line ``argv`` says; returns the summary dict.

    Args:
        argv: the arguments (default ``sys.argv[1:]``), see :func:`build_parser`.

    Examples::

        >>> main(["--dataset", "synthetic_pedestrians", "--root", "data", "--adapter",
        ...       "synthetic", "--height", "128", "--width", "64"])   # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    if args.stride < 1:
        raise SystemExit(f"--stride {args.stride}: the backbone's feature stride is at least 1 "
                         "(16 for the models here)")
    feature_size = pipeline.feature_size_for((args.height, args.width), args.stride)
    if min(feature_size) < 1:
        raise SystemExit(
            f"--height {args.height} --width {args.width} with --stride {args.stride}: the "
            f"feature map would be {feature_size[0]}x{feature_size[1]}, and priors are made for "
            f"the feature map. Give the model's input size; the smallest is --height "
            f"{args.stride} --width {args.stride} (the stride), e.g. --height 256 --width 128.")

    if args.list_only:
        image_root, items, cache_dir = list_images(args)
        write_file_list(args.list_only, image_root, items, cache_dir, regenerate_command(args))
        return {"images": len(items)}
    if args.adapter == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
        return run_in_mediapipe_env(args)  # list here, generate in the mediapipe environment
    dataset_dir, items, cache_dir = list_images(args)
    if not items:
        raise SystemExit(f"no images found for {args.dataset or args.manifest or args.images}")
    try:
        adapter = build_adapter(args, dataset_dir)
    except (FileNotFoundError, NotADirectoryError) as exc:  # e.g. a typo in --parsing-dir
        raise SystemExit(str(exc)) from None
    config = getattr(adapter, "config", pipeline.PriorConfig())  # stage 1 (labels) and stage 2
    out = args.out or osp.join(
        cache_dir, f"priors_{args.adapter}_{feature_size[0]}x{feature_size[1]}.npz")
    fingerprint = cache_mod.dataset_fingerprint(dataset_dir, [r for _, r in items])
    header = {"tool": adapter.name, "tool_version": adapter.version,
              "feature_size": list(feature_size), "fingerprint": fingerprint,
              "dataset_dir": dataset_dir, "config": vars(config),
              "command": (read_file_list_command(args.file_list) if args.file_list else
                          regenerate_command(args))}
    header["config"] = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in header["config"].items()}
    if osp.exists(out):
        if not args.overwrite:
            # this very run's command, --out included, is the one every error names
            rerun = (header["command"] + (f" --out {shlex.quote(osp.abspath(out))}"
                                          if args.out else "") + " --overwrite")
            try:
                c = cache_mod.PriorCache.load(out, adapter.name, adapter.version, feature_size,
                                              fingerprint, regenerate=rerun)
                print(f"up-to-date prior cache '{out}': {c.summary()}")
                return check_fallback_share(c.summary(), args.max_fallback_share, out)
            except cache_mod.StalePriorCacheError as exc:   # stale or damaged
                raise SystemExit(str(exc)) from None
        os.remove(out)
    writer = cache_mod.PriorCacheWriter(out, header, image_root=dataset_dir,
                                        overwrite=args.overwrite)
    todo = [(path, rel, feature_size, config) for path, rel in items
            if rel not in writer.done]
    print(f"{len(items)} images ({len(items) - len(todo)} already done), adapter {adapter.name}, "
          f"feature size {feature_size}, {args.workers} workers -> {out}")
    start, errors = time.time(), 0
    reasons = {"no_head": 0, "no_legs": 0}
    why = {}  # relpath -> fallback reason (pipeline.fallback_reason), stored in the header

    def count(rel, prior, info):
        reasons["no_head"] += info.get("head") is False
        reasons["no_legs"] += info.get("legs") is False
        reason = pipeline.fallback_reason(prior.case, info)
        if reason:
            why[rel] = reason + (f": {info['error']}" if "error" in info else "")
        return "error" in info
    bar = dict(total=len(todo), desc="priors", unit="img")
    if args.workers > 1 and len(todo) > 1:
        from multiprocessing import get_context
        with get_context("fork").Pool(args.workers, _init_worker, (adapter,)) as pool:
            results = pool.imap(_run_one, todo, chunksize=16)
            for rel, mask, prior, info in progress.progress_bar(results, **bar):
                errors += count(rel, prior, info)
                writer.add(rel, mask, prior)
    else:
        _init_worker(adapter)
        for job in progress.progress_bar(todo, **bar):
            rel, mask, prior, info = _run_one(job)
            errors += count(rel, prior, info)
            writer.add(rel, mask, prior)
    writer.header["fallback_reasons"] = why  # images done by an earlier, interrupted run: not known
    cache = writer.finish()
    seconds = time.time() - start
    summary = dict(cache.summary(), seconds=round(seconds, 1), tool_errors=errors, **reasons,
                   images_per_s=round(len(todo) / max(seconds, 1e-9), 1), path=out)
    print("summary: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in summary.items()))
    return check_fallback_share(summary, args.max_fallback_share, out)


if __name__ == "__main__":
    main()
