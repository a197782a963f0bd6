"""Turn a folder of your own pedestrian crops into a dataset torchreid (and MPN) can train on.

Writes ``<out>/manifest.csv`` (path,pid,camid,split; images stay where they are) and
``<out>/summary.json`` (counts, seed, every skipped item with its reason). Train with
``data.sources [custom_crops_prior]`` (MPN, with priors) or ``[custom_crops]``, ``--root <out>``.

Examples::

    # file names like 0001_c2_000123.jpg
    python tools/prepare_dataset.py --images crops/ --pattern "{pid}_c{cam}_*.jpg" \
        --out data/my_crops
    # CUHK01 (PPPPIII.png): 100 test identities, query = camera A, gallery = camera B
    python tools/prepare_dataset.py --images ../shared/data/cuhk01/campus --preset cuhk01 \
        --num-test-ids 100 --query-cams 0 --gallery-cams 1 --out data/cuhk01
    # Market-1501 file names (PPPP_cCsS_FFFFFF_BB.jpg): Market's convention, pid -1 (junk)
    # skipped, pid 0 (distractors) in the gallery only; both counts in summary.json
    python tools/prepare_dataset.py --images Market-1501/bounding_box_test --preset market1501 \
        --num-test-ids 100 --out data/my_market
    # the same with a detector-like box error on every crop (a development set with
    # misalignment; jittered copies under data/cuhk01_jitter/jittered/)
    python tools/prepare_dataset.py --images ../shared/data/cuhk01/campus --preset cuhk01 \
        --num-test-ids 100 --query-cams 0 --gallery-cams 1 --out data/cuhk01_jitter --box-jitter
    # a CSV with path,pid,camid (a UTF-8 BOM, as Excel writes, is fine)
    python tools/prepare_dataset.py --csv labels.csv --out data/my_crops --test-fraction 0.2
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil

from ..data import prepare
from ..data.box_jitter import BoxJitter
from ..data.manifest import MANIFEST_NAME, read_manifest


def export_market(manifest: str, out_dir: str) -> int:
    """Optional: a Market-1501 layout copy (``bounding_box_train`` / ``query`` /
    ``bounding_box_test``, names ``PPPP_cCs1_NNNNNN_00.jpg``) for tools that only read that
    layout. Needs pids < 10000 and at most 9 cameras (camera ids 1-9 in the names)."""
    import cv2
    rows = read_manifest(manifest)
    cams = sorted({r.camid for r in rows})
    if len(cams) > 9 or max(r.pid for r in rows) >= 10000:
        raise ValueError(f"Market-1501 layout holds at most 9 cameras and pids < 10000 "
                         f"({len(cams)} cameras, max pid {max(r.pid for r in rows)}): use the "
                         f"manifest dataset ('custom_crops') instead")
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for f in folders.values():
        os.makedirs(osp.join(out_dir, f), exist_ok=True)
    for i, r in enumerate(rows):
        name = f"{r.pid:04d}_c{cams.index(r.camid) + 1}s1_{i:06d}_00.jpg"
        dst = osp.join(out_dir, folders[r.split], name)
        if r.path.lower().endswith((".jpg", ".jpeg")):
            shutil.copyfile(r.path, dst)
        else:
            cv2.imwrite(dst, cv2.imread(r.path))
    return len(rows)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/prepare_dataset.py``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of crops (searched recursively)")
    src.add_argument("--csv", help="CSV with a path,pid,camid header")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--pattern",
                     help="file name pattern with {pid} and {cam}, e.g. '{pid}_c{cam}_*.jpg'")
    how.add_argument("--regex", help="regex on the file name with named groups pid and cam")
    how.add_argument("--preset", choices=sorted(prepare.PRESETS))
    p.add_argument("--out", required=True, help="output folder (use it as data.root)")
    p.add_argument("--num-test-ids", type=int, default=None)
    p.add_argument("--test-fraction", type=float, default=0.1, help="used without --num-test-ids")
    p.add_argument("--query-cams", type=int, nargs="*", default=[])
    p.add_argument("--gallery-cams", type=int, nargs="*", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-size", type=int, nargs=2, default=[16, 8], metavar=("H", "W"))
    p.add_argument("--export-market", default="", help="also write a Market-1501 layout copy here")
    p.add_argument("--box-jitter", action="store_true",
                   help="give every crop (train and test) a detector-like box error: scale and "
                        "shift drawn per image (the synthetic generator's model), deterministic "
                        "by --jitter-seed; jittered copies go to <out>/jittered/")
    p.add_argument("--jitter-seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None):
    """Run ``tools/prepare_dataset.py`` with ``argv`` (flags: :func:`build_parser`)."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.images:
        if not (a.pattern or a.regex or a.preset):
            p.error("--images needs one of --pattern, --regex or --preset")
        scan = (prepare.scan_pattern(a.images, a.pattern) if a.pattern else
                prepare.scan_regex(a.images, a.regex) if a.regex else
                prepare.scan_preset(a.images, a.preset))
        source = f"{a.images} ({a.pattern or a.regex or a.preset})"
    else:
        scan = prepare.scan_csv(a.csv)
        source = a.csv
    jitter = BoxJitter(seed=a.jitter_seed) if a.box_jitter else None
    summary = prepare.prepare_dataset(scan, a.out, a.num_test_ids, a.test_fraction, a.query_cams,
                                      a.gallery_cams, a.seed, tuple(a.min_size), not a.quiet,
                                      source, box_jitter=jitter)
    if a.box_jitter:
        j = summary["box_jitter"]
        print(f"box jitter: {j['images']} images, scale {j['box_scale']}, shift std "
              f"{j['box_shift_std']} (seed {j['seed']}); parameters in "
              f"{osp.join(a.out, j['parameters'])}")
    print("| split | images | identities | cameras |\n|---|---|---|---|")
    for split, c in summary["counts"].items():
        print(f"| {split} | {c['images']} | {c['identities']} | {c['cameras']} |")
    for key in ("junk", "distractors"):
        if summary[key]["count"]:
            print(f"{summary[key]['count']} {key}: {summary[key]['reason']}")
    t = summary["train_only_identities"]
    if t["count"]:
        print(f"{t['count']} identities can only be used for training ({t['reason']})")
    sk = summary["skipped"]
    if sk["count"]:
        print(f"skipped {sk['count']} item(s): "
              + ", ".join(f"{k}: {v}" for k, v in sk["by_reason"].items()))
        for it in sk["items"][:10]:
            print(f"  {it['item']}: {it['reason']}")
        if sk["count"] > 10:
            print(f"  ... all of them in {osp.join(a.out, 'summary.json')}")
    print(f"wrote {summary['manifest']}")
    if a.export_market:
        n = export_market(osp.join(a.out, MANIFEST_NAME), a.export_market)
        print(f"wrote a Market-1501 layout copy of {n} images to {a.export_market}")
    return summary


if __name__ == "__main__":
    main()
