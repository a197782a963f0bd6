"""Features of a folder of crops (recursive) or of a manifest, into a sharded feature store.

The store (``--out``) holds fixed-size ``.npy`` shards with a CSV of their paths, and a
``meta.json`` with the model's config hash and checkpoint (path + sha256) or ONNX sha256
(:mod:`mpn_plugin.inference.feature_store`). An interrupted run continues where it stopped
when started again with the same command; the finished store is identical to an
uninterrupted run's.

Examples::

    python tools/extract_features.py --config-file configs/mpn_synthetic.yaml \
        --checkpoint log/mpn_synthetic/model/model.pth.tar-12 \
        --images data/synthetic_pedestrians/bounding_box_test --preset market1501 \
        --out features/gallery
    # from an exported graph, a manifest's gallery split, skipping unreadable files:
    python tools/extract_features.py --onnx exported/mpn.onnx \
        --manifest data/my_crops/manifest.csv --split gallery --skip-unreadable \
        --out features/my_gallery
"""
from __future__ import annotations

import argparse
import json
import os.path as osp

from .feature_extractor import FeatureExtractor
from .feature_store import (
    identities_from_names,
    items_from_manifest,
    list_images,
    write_feature_store,
)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model options shared by the feature tools (``--config-file/--checkpoint`` or
    ``--onnx``)."""
    g = p.add_argument_group("model")
    g.add_argument("--config-file", default=None, help="YAML the model was trained with")
    g.add_argument("--checkpoint", default=None, help="checkpoint written by tools/train.py")
    g.add_argument("--onnx", default=None, help="graph written by tools/export_onnx.py "
                                                "(instead of --checkpoint)")
    g.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    g.add_argument("--amp", action="store_true", default=None,
                   help="mixed precision (default: the config's test.amp)")
    g.add_argument("--flip", action="store_true", default=None,
                   help="add the flipped image's features (default: the config's test.flip)")
    g.add_argument("--skip-unreadable", action="store_true",
                   help="skip unreadable images and list them (default: stop and name the file)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config overrides (key value ...), as for tools/train.py")


def add_image_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """Image inputs: a folder or a manifest, and how to read identities from file names."""
    g = p.add_argument_group("images")
    g.add_argument(f"--{prefix}images", default=None, help="folder of images (recursive)")
    g.add_argument(f"--{prefix}manifest", default=None,
                   help="manifest CSV path,pid,camid,split (tools/prepare_dataset.py)")
    g.add_argument(f"--{prefix}split", nargs="*", default=[],
                   help="manifest splits to take (default: all)")
    g.add_argument(f"--{prefix}pattern", default=None,
                   help="identities from file names, e.g. '{pid}_c{cam}_*.jpg'")
    g.add_argument(f"--{prefix}preset", default=None,
                   help="identities from a known naming scheme (market1501, cuhk01)")


def build_extractor(args) -> FeatureExtractor:
    if (args.checkpoint is None) == (args.onnx is None):
        raise SystemExit("give --config-file with --checkpoint, or --onnx")
    return FeatureExtractor(config_file=args.config_file, checkpoint=args.checkpoint,
                            onnx=args.onnx, opts=args.opts or (), device=args.device,
                            batch_size=args.batch_size,
                            amp=args.amp, flip=args.flip, num_workers=args.workers)


def collect_items(args, prefix: str = ""):
    """(items, source description) from the image arguments."""
    get = lambda name: getattr(args, prefix.replace("-", "_") + name)  # noqa: E731
    images, manifest = get("images"), get("manifest")
    if (images is None) == (manifest is None):
        raise SystemExit(f"give --{prefix}images DIR or --{prefix}manifest CSV")
    if manifest:
        return items_from_manifest(manifest, get("split")), manifest
    items = list_images(images)
    if not items:
        raise SystemExit(f"--{prefix}images {images}: no image files found")
    pattern, preset = get("pattern"), get("preset")
    if pattern or preset:
        items = identities_from_names(items, pattern, preset)
        unknown = sum(it.pid < 0 for it in items)
        if unknown:
            print(f"[features] {unknown} of {len(items)} names do not match the "
                  "identity pattern: stored with pid/camid -1 (unknown)")
    return items, osp.abspath(images)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("Examples::")[1])
    add_model_arguments(p)
    add_image_arguments(p)
    p.add_argument("--out", required=True, help="feature-store folder")
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard")
    p.add_argument("--overwrite", action="store_true",
                   help="start again when --out holds a store of other inputs or model")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    items, source = collect_items(args)
    extractor = build_extractor(args)
    meta = write_feature_store(extractor, items, args.out, shard_size=args.shard_size,
                               skip_unreadable=args.skip_unreadable, overwrite=args.overwrite,
                               source=source)
    print(json.dumps({k: meta[k] for k in ("num_features", "feature_dim", "num_shards",
                                           "num_skipped")}))
    print(f"[features] wrote {meta['num_features']} features to {args.out}")
    return meta


if __name__ == "__main__":
    main()
