"""Generate the embedded synthetic pedestrian dataset (Market-1501 layout).

Examples::

    python tools/make_synthetic_dataset.py --root data
    python tools/make_synthetic_dataset.py --root data/error_free --error-free-boxes
    python tools/make_synthetic_dataset.py --root data/mq --gt-bbox-per-id-cam 3   # multi-query
"""
import argparse
import json

from ..data.synthetic import SyntheticConfig, config_hash, generate_synthetic_dataset


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/make_synthetic_dataset.py``."""
    d = SyntheticConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="data")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-train-ids", type=int, default=d.num_train_ids)
    p.add_argument("--num-test-ids", type=int, default=d.num_test_ids)
    p.add_argument("--images-per-id", type=int, default=d.images_per_id)
    p.add_argument("--num-cameras", type=int, default=d.num_cameras)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--hard-negative-share", type=float, default=d.hard_negative_share)
    p.add_argument("--map-failure-rate", type=float, default=d.map_failure_rate)
    p.add_argument("--occluder-prob", type=float, default=d.occluder_prob)
    p.add_argument("--error-free-boxes", action="store_true")
    p.add_argument("--gt-bbox-per-id-cam", type=int, default=d.gt_bbox_per_id_cam,
                   help="extra query-side crops per test identity and camera in gt_bbox/ "
                        "(test.multi_query); 0 = no gt_bbox/")
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--overwrite", action="store_true")
    return p


def main(argv=None):
    """Run ``tools/make_synthetic_dataset.py`` with the arguments ``argv`` (default
    ``sys.argv[1:]``; see :func:`build_parser`).

    Examples::

        >>> main(["--help"])   # doctest: +SKIP
    """
    a = build_parser().parse_args(argv)
    cfg = SyntheticConfig(
        num_train_ids=a.num_train_ids, num_test_ids=a.num_test_ids, images_per_id=a.images_per_id,
        num_cameras=a.num_cameras, height=a.height, width=a.width, seed=a.seed,
        hard_negative_share=a.hard_negative_share, map_failure_rate=a.map_failure_rate,
        occluder_prob=a.occluder_prob, error_free_boxes=a.error_free_boxes, workers=a.workers,
        gt_bbox_per_id_cam=a.gt_bbox_per_id_cam)
    summary = generate_synthetic_dataset(a.root, cfg, overwrite=a.overwrite)
    print(f"synthetic_pedestrians (config hash {config_hash(cfg)}) in {a.root}:")
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
