"""The smallest folders torchreid's own parsers accept, for Market-1501, DukeMTMC-reID,
CUHK03 (767/700 split files) and MSMT17, and a manifest of own crops (custom_crops); tiny
images, 4 identities x 2 cameras x 2 images. Also the occluded / partial benchmarks in their
exact layouts (mpn_plugin/data/occluded_datasets.py): Occluded_Duke, Occluded_REID,
Partial_REID."""
import json
import os
import os.path as osp

import cv2
import numpy as np

IMG = np.full((16, 8, 3), 127, np.uint8)


def _img(path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    cv2.imwrite(path, IMG)
    return path


def market_like(base):
    for split, pids in (("bounding_box_train", range(1, 5)), ("query", range(5, 9)),
                        ("bounding_box_test", range(5, 9))):
        for pid in pids:
            for cam in (1, 2):
                for k in range(2 if split != "query" else 1):
                    _img(osp.join(base, split, f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"))


def occluded_duke_like(base):
    """DukeMTMC-reID names (``0001_c2_f0046182.jpg``): train pids 1-4, test pids 5-8, one
    query per pid (camera 1), gallery 2 cameras x 2."""
    for split, pids in (("bounding_box_train", range(1, 5)), ("query", range(5, 9)),
                        ("bounding_box_test", range(5, 9))):
        for pid in pids:
            for cam in ((1, 2) if split != "query" else (1,)):
                for k in range(2 if split != "query" else 1):
                    _img(osp.join(base, split, f"{pid:04d}_c{cam}_f{46182 + 10 * k + cam:07d}.jpg"))


def query_gallery_like(base, query, gallery, ext, per_id_folder, pids=(1, 2, 3, 5), n=2):
    """Test-only benchmarks: ``<query>/`` and ``<gallery>/`` with ``n`` images of each pid
    (``<pid>_<k>.<ext>``, 3-digit pids), flat or in one folder per pid."""
    for split in (query, gallery):
        for pid in pids:
            for k in range(1, n + 1):
                sub = f"{pid:03d}" if per_id_folder else ""
                _img(osp.join(base, split, sub, f"{pid:03d}_{k:02d}{ext}"))


def make_all(root):
    market_like(osp.join(root, "market1501", "Market-1501-v15.09.15"))
    market_like(osp.join(root, "dukemtmc-reid", "DukeMTMC-reID"))
    occluded_duke_like(osp.join(root, "Occluded_Duke"))
    query_gallery_like(osp.join(root, "Occluded_REID"), "occluded_body_images",
                       "whole_body_images", ".tif", per_id_folder=True)
    pr = osp.join(root, "Partial_REID")
    query_gallery_like(pr, "partial_body_images", "whole_body_images", ".jpg", per_id_folder=False)
    _img(osp.join(pr, "occluded_body_images", "001_01.jpg"))  # in the release, not read
    # MSMT17: lists of "<pid>/<pid>_<idx>_<cam>_..jpg pid"
    m = osp.join(root, "msmt17", "MSMT17_V1")
    lists = {"list_train.txt": ("train", range(0, 4)), "list_val.txt": ("train", range(0, 4)),
             "list_query.txt": ("test", range(0, 4)), "list_gallery.txt": ("test", range(0, 4))}
    for name, (sub, pids) in lists.items():
        lines = []
        for pid in pids:
            for cam in (1, 2):
                for k in range(2):
                    rel = f"{pid:04d}/{pid:04d}_{k:03d}_{cam:02d}_0303morning_0001_0.jpg"
                    _img(osp.join(m, sub, rel))
                    lines.append(f"{rel} {pid}\n")
        open(osp.join(m, name), "w").writelines(lines)
    # CUHK03: the .mat files must exist; with every split json present, no conversion runs
    c = osp.join(root, "cuhk03")
    for f in ("cuhk03_release/cuhk-03.mat", "cuhk03_new_protocol_config_detected.mat",
              "cuhk03_new_protocol_config_labeled.mat"):
        os.makedirs(osp.dirname(osp.join(c, f)), exist_ok=True)
        open(osp.join(c, f), "w").close()
    for kind in ("detected", "labeled"):
        d = osp.join(c, f"images_{kind}")
        items = lambda pids, cams, n: [[_img(osp.join(d, f"1_{p:03d}_{cam}_{k:02d}.png")), p, cam]  # noqa: E731
                                       for p in pids for cam in cams for k in range(n)]
        split = {"train": items(range(4), (0, 1), 2), "query": items(range(4, 8), (0,), 1),
                 "gallery": items(range(4, 8), (1,), 2), "num_train_pids": 4,
                 "num_query_pids": 4, "num_gallery_pids": 4}
        for proto in ("new", "classic"):
            with open(osp.join(c, f"splits_{proto}_{kind}.json"), "w") as f:
                json.dump([split], f)
    # own crops: a manifest written by tools/prepare_dataset.py (any names, any format)
    from mpn_plugin.data.manifest import ManifestRow, write_manifest
    d = osp.join(root, "custom_crops")
    rows = [ManifestRow(_img(osp.join(d, "imgs", f"id{p}_cam{cam}_{k}.png")), p, cam, split)
            for split, pids, cams, n in (("train", range(4), (0, 1), 2),
                                         ("query", range(4, 8), (0,), 1),
                                         ("gallery", range(4, 8), (1,), 2))
            for p in pids for cam in cams for k in range(n)]
    write_manifest(osp.join(d, "manifest.csv"), rows)
    return root
