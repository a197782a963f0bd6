"""Turn a folder of pedestrian crops into a manifest dataset (``tools/prepare_dataset.py``).

Three ways to read identity and camera:

* a filename pattern with ``{pid}`` and ``{cam}`` placeholders (digits) and shell wildcards,
  e.g. ``{pid}_c{cam}_*.jpg``, matched against the path relative to the folder;
* a regular expression with named groups ``pid`` and ``cam``, or a preset (``cuhk01``:
  ``PPPPIII.png``, images 001-002 camera A, 003-004 camera B; ``market1501``:
  ``PPPP_cCsS_FFFFFF_BB.jpg``, following Market-1501's convention: pid -1 = junk, skipped;
  pid 0 = distractors, gallery only, never an identity);
* a CSV with a ``path,pid,camid`` header (paths absolute or relative to the CSV; a UTF-8 BOM,
  as Excel writes it, is fine).

Every image is checked (readable, decodable, large enough, not a duplicate of another file or
row); identities are split into train and test by seed; test identities must be seen by a query
camera and by a gallery camera, otherwise they cannot be evaluated and stay in training. All
skipped items are reported with their reason, never silently dropped (including broken
symbolic links and folders named like images).

Examples::

    >>> report = prepare_dataset(scan_pattern("crops/", "{pid}_{cam}_*.jpg"), "data/my_crops",
    ...                          num_test_ids=100, seed=0)
    >>> report["counts"]
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import os.path as osp
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .manifest import MANIFEST_NAME, ManifestRow, write_manifest

__all__ = ["Candidate", "Scan", "PRESETS", "scan_pattern", "scan_regex", "scan_preset", "scan_csv",
           "prepare_dataset"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _cuhk01_cam(groups: Dict[str, str]) -> int:
    return 0 if int(groups["idx"]) <= 2 else 1


#: name -> (regex on the file name, camera function or None to use the ``cam`` group)
PRESETS = {
    "cuhk01": (r"^(?P<pid>\d{4})(?P<idx>\d{3})\.png$", _cuhk01_cam),
    "market1501": (r"^(?P<pid>-?\d+)_c(?P<cam>\d)s\d_\d+_\d+\.jpg$", None),
}

#: name -> the preset's special person ids: ``junk`` (skipped) and ``distractors`` (gallery only)
PRESET_SPECIAL_PIDS = {
    "market1501": {"junk": (-1,), "distractors": (0,)},
}


@dataclass
class Candidate:
    path: str       # absolute
    pid: int
    camid: int
    source: str     # where it came from (relative path or CSV line), for reports


@dataclass
class Scan:
    candidates: List[Candidate] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)     # (item, reason)
    distractors: List[Candidate] = field(default_factory=list)       # gallery only, no identity
    junk: int = 0                                                    # junk images (skipped)


def _broken_link_reason(path: str) -> Optional[str]:
    if osp.islink(path) and not osp.exists(path):
        return f"broken symbolic link (to '{os.readlink(path)}', which does not exist)"
    return None


def _folder_entries(folder: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(files under ``folder``, (relative path, reason) of entries that are not usable files:
    broken symbolic links and folders named like images)."""
    folder = osp.abspath(osp.expanduser(folder))
    if not osp.isdir(folder):
        raise FileNotFoundError(f"crop folder '{folder}' does not exist")
    files, unusable = [], []
    for p in sorted(glob.glob(osp.join(folder, "**", "*"), recursive=True)):
        if osp.isfile(p):
            files.append(p)
        elif broken := _broken_link_reason(p):
            unusable.append((osp.relpath(p, folder), broken))
        elif osp.isdir(p) and p.lower().endswith(IMAGE_EXTS):
            unusable.append((osp.relpath(p, folder), "a folder, not an image file"))
    return files, unusable


def images_under(folder: str) -> List[str]:
    """Every file under ``folder`` (recursive, sorted; broken links and folders left out)."""
    return _folder_entries(folder)[0]


def preset_regex(preset: str):
    """(regex, camera function or None) of a naming scheme of :data:`PRESETS`."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    return PRESETS[preset]


def identity_from_match(match, cam_fn=None) -> Tuple[int, int]:
    """(pid, camid) of a file-name match of a pattern / preset regex (``ValueError`` when
    they are not integers)."""
    g = match.groupdict()
    return int(g["pid"]), (cam_fn(g) if cam_fn else int(g["cam"]))


def pattern_to_regex(pattern: str) -> str:
    """``{pid}_c{cam}_*.jpg`` -> a regex with named digit groups (``*``/``?`` as wildcards)."""
    if "{pid}" not in pattern or "{cam}" not in pattern:
        raise ValueError(f"--pattern {pattern!r} needs both {{pid}} and {{cam}} placeholders, "
                         "e.g. '{pid}_c{cam}_*.jpg'")
    out, i = "", 0
    while i < len(pattern):
        for key in ("{pid}", "{cam}"):
            if pattern.startswith(key, i):
                out += f"(?P<{key[1:-1]}>-?\\d+)"
                i += len(key)
                break
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i]) or re.escape(pattern[i])
            i += 1
    return "^" + out + "$"


def _scan_with_regex(folder: str, regex: str, cam_fn=None, on_name: bool = True) -> Scan:
    rx = re.compile(regex)
    if "pid" not in rx.groupindex or (cam_fn is None and "cam" not in rx.groupindex):
        raise ValueError(f"regex {regex!r} needs named groups (?P<pid>...) and (?P<cam>...)")
    root = osp.abspath(osp.expanduser(folder))
    files, unusable = _folder_entries(root)
    scan = Scan(skipped=unusable)
    for path in files:
        rel = osp.relpath(path, root)
        m = rx.match(osp.basename(rel) if on_name else rel.replace(os.sep, "/"))
        if m is None:
            reason = ("not an image" if not path.lower().endswith(IMAGE_EXTS)
                      else "name does not match the pattern")
            scan.skipped.append((rel, reason))
            continue
        try:
            pid, cam = identity_from_match(m, cam_fn)
            scan.candidates.append(Candidate(path, pid, cam, rel))
        except ValueError:
            scan.skipped.append((rel, "pid/camera is not an integer"))
    return scan


def scan_pattern(folder: str, pattern: str) -> Scan:
    """Candidates from file names matching ``pattern`` (relative paths may hold folders)."""
    return _scan_with_regex(folder, pattern_to_regex(pattern), on_name="/" not in pattern)


def scan_regex(folder: str, regex: str) -> Scan:
    """Candidates from file names matching ``regex`` (named groups ``pid`` and ``cam``)."""
    return _scan_with_regex(folder, regex)


def scan_preset(folder: str, preset: str) -> Scan:
    """Candidates from a known naming scheme (:data:`PRESETS`)."""
    regex, cam_fn = preset_regex(preset)
    scan = _scan_with_regex(folder, regex, cam_fn)
    special = PRESET_SPECIAL_PIDS.get(preset)
    if special:
        kept = []
        for c in scan.candidates:
            if c.pid in special["junk"]:
                scan.skipped.append((c.source, f"junk image (pid {c.pid}, {preset} convention)"))
                scan.junk += 1
            elif c.pid in special["distractors"]:
                scan.distractors.append(c)
            else:
                kept.append(c)
        scan.candidates = kept
    return scan


def scan_csv(csv_path: str) -> Scan:
    """Candidates from a CSV with a ``path,pid,camid`` header."""
    if not osp.isfile(csv_path):
        raise FileNotFoundError(f"CSV '{csv_path}' does not exist")
    base = osp.dirname(osp.abspath(csv_path))
    scan = Scan()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("path", "pid", "camid") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"CSV '{csv_path}': missing column(s) {missing}; the header must be "
                             f"path,pid,camid (found {reader.fieldnames})")
        for line, rec in enumerate(reader, start=2):
            where = f"{osp.basename(csv_path)}:{line}"
            try:
                pid, cam = int(rec["pid"]), int(rec["camid"])
            except (TypeError, ValueError):
                scan.skipped.append((where, f"pid {rec['pid']!r} / camid {rec['camid']!r} "
                                            "is not an integer"))
                continue
            p = rec["path"] or ""
            path = p if osp.isabs(p) else osp.normpath(osp.join(base, p))
            scan.candidates.append(Candidate(path, pid, cam, where))
    return scan


def _check_image(path: str, min_size: Tuple[int, int]) -> Optional[str]:
    """None if the image is usable, else the reason."""
    from PIL import Image
    if not osp.isfile(path):
        return _broken_link_reason(path) or ("a folder, not an image file" if osp.isdir(path)
                                             else "file does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            w, h = im.size
    except Exception as exc:  # PIL raises many types for broken files
        return f"unreadable image ({type(exc).__name__})"
    if h < min_size[0] or w < min_size[1]:
        return f"too small ({w}x{h} < {min_size[1]}x{min_size[0]})"
    return None


def _file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def validate(scan: Scan, min_size: Tuple[int, int] = (16, 8), progress: bool = True) -> Scan:
    """Drop unusable candidates and distractors (missing, unreadable, too small, duplicate path
    or content)."""
    from ..progress import progress_bar as tqdm
    out = Scan(skipped=list(scan.skipped), junk=scan.junk)
    seen_path, seen_hash = {}, {}
    items = [(c, out.candidates) for c in scan.candidates] + [(c, out.distractors)
                                                               for c in scan.distractors]
    for c, kept in tqdm(items, desc="checking images", unit="img", disable=not progress):
        key = osp.realpath(c.path)
        if key in seen_path:
            out.skipped.append((c.source, f"duplicate of {seen_path[key]}"))
            continue
        seen_path[key] = c.source
        reason = _check_image(c.path, min_size)
        if reason:
            out.skipped.append((c.source, reason))
            continue
        digest = _file_hash(c.path)
        if digest in seen_hash:
            out.skipped.append((c.source, f"same content as {seen_hash[digest]}"))
            continue
        seen_hash[digest] = c.source
        kept.append(c)
    return out


def split_identities(cands: Sequence[Candidate], num_test_ids: Optional[int], test_fraction: float,
                     query_cams: Sequence[int], gallery_cams: Sequence[int], seed: int
                     ) -> Tuple[set, List[int]]:
    """(test pids, pids that could not be tested because of their cameras)."""
    cams = defaultdict(set)
    for c in cands:
        cams[c.pid].add(c.camid)

    def testable(pid):
        cs = cams[pid]
        if query_cams:
            gal = set(gallery_cams) if gallery_cams else set()
            return bool(cs & set(query_cams)) and bool(cs & gal if gal else cs - set(query_cams))
        return len(cs) >= 2
    pids = sorted(cams)
    eligible = [p for p in pids if testable(p)]
    n = num_test_ids if num_test_ids is not None else int(round(test_fraction * len(pids)))
    if n > len(eligible):
        raise ValueError(f"{n} test identities asked but only {len(eligible)} of {len(pids)} are "
                         f"seen by a query and a gallery camera; lower --num-test-ids")
    if n >= len(pids):
        raise ValueError(f"{n} test identities leave no identity for training ({len(pids)} in all)")
    rng = np.random.default_rng(seed)
    test = set(int(p) for p in rng.choice(eligible, size=n, replace=False)) if n else set()
    return test, [p for p in pids if not testable(p)]


def assign_splits(cands: Sequence[Candidate], test_pids: set, query_cams: Sequence[int],
                  gallery_cams: Sequence[int], seed: int) -> List[ManifestRow]:
    """Train rows for the training identities; query/gallery rows for the test identities.

    With ``query_cams``: query = the test images from those cameras, gallery = the images from
    ``gallery_cams`` (default: every other camera). Without: per test identity one camera is
    drawn (by seed) as its query camera and the rest of its images form the gallery.
    """
    rng = np.random.default_rng(seed + 1)
    rows, by_pid = [], defaultdict(list)
    for c in cands:
        if c.pid in test_pids:
            by_pid[c.pid].append(c)
        else:
            rows.append(ManifestRow(c.path, c.pid, c.camid, "train"))
    for pid in sorted(by_pid):
        items = by_pid[pid]
        if query_cams:
            qc = set(query_cams)
            gc = set(gallery_cams) if gallery_cams else {c.camid for c in items} - qc
        else:
            qc = {int(rng.choice(sorted({c.camid for c in items})))}
            gc = {c.camid for c in items} - qc
        for c in items:
            if c.camid in qc:
                rows.append(ManifestRow(c.path, c.pid, c.camid, "query"))
            elif c.camid in gc:
                rows.append(ManifestRow(c.path, c.pid, c.camid, "gallery"))
    return rows


def prepare_dataset(scan: Scan, out_dir: str, num_test_ids: Optional[int] = None,
                    test_fraction: float = 0.1, query_cams: Sequence[int] = (),
                    gallery_cams: Sequence[int] = (), seed: int = 0,
                    min_size: Tuple[int, int] = (16, 8), progress: bool = True,
                    source: str = "", box_jitter=None) -> Dict:
    """Validate, split and write ``<out_dir>/manifest.csv`` and ``<out_dir>/summary.json``.

    Args:
        scan (Scan): from :func:`scan_pattern`, :func:`scan_regex`, :func:`scan_preset` or
            :func:`scan_csv`.
        out_dir (str): output folder (the dataset's ``data.root``; priors go there too).
        num_test_ids (int, optional): test identities; default ``test_fraction`` of all.
        query_cams / gallery_cams: camera ids for query / gallery (see :func:`assign_splits`).
        seed (int): the split is a function of the seed and the input only.
        min_size (tuple): smallest usable (height, width).
        box_jitter (BoxJitter, optional): give every image (all splits) a detector-like box
            error (:mod:`~mpn_plugin.data.box_jitter`): the manifest then lists jittered copies
            written under ``<out_dir>/jittered/`` (parameters in ``box_jitter.csv``).

    Returns:
        dict: the summary (counts per split, skipped items with reasons, junk and distractor
        counts of a preset such as ``market1501``, seed, options). Distractors (Market's pid 0)
        go into the gallery only and take no part in the identity split.
    """
    checked = validate(scan, min_size, progress)
    if not checked.candidates:
        raise ValueError(f"no usable image: {len(checked.skipped)} skipped, e.g. "
                         f"{checked.skipped[:3]}; check the pattern/CSV and the folder")
    test_pids, untestable = split_identities(checked.candidates, num_test_ids, test_fraction,
                                             query_cams, gallery_cams, seed)
    rows = assign_splits(checked.candidates, test_pids, query_cams, gallery_cams, seed)
    unused = len(checked.candidates) - len(rows)
    rows += [ManifestRow(c.path, c.pid, c.camid, "gallery") for c in checked.distractors]
    os.makedirs(out_dir, exist_ok=True)
    jitter_info = None
    if box_jitter is not None:
        from .box_jitter import jitter_images, jitter_summary
        sources = {c.path: c.source for c in list(checked.candidates) + list(checked.distractors)}
        keys = [sources[r.path] for r in rows]
        mapping, boxes = jitter_images([r.path for r in rows], keys, out_dir, box_jitter)
        rows = [ManifestRow(mapping[r.path], r.pid, r.camid, r.split) for r in rows]
        jitter_info = jitter_summary(box_jitter, boxes)
    write_manifest(osp.join(out_dir, MANIFEST_NAME), rows)
    counts = {s: {"images": sum(r.split == s for r in rows),
                  "identities": len({r.pid for r in rows if r.split == s}),
                  "cameras": len({r.camid for r in rows if r.split == s})}
              for s in ("train", "query", "gallery")}
    summary = {
        "source": source, "seed": seed, "num_test_ids": len(test_pids),
        "query_cams": list(query_cams), "gallery_cams": list(gallery_cams),
        "counts": counts, "unused_test_images": unused,
        "train_only_identities": {"count": len(untestable),
                                  "reason": "not seen by a query and a gallery camera",
                                  "pids": untestable[:50]},
        "junk": {"count": checked.junk, "reason": "junk images of the preset (Market-1501: "
                                                  "pid -1), skipped"},
        "distractors": {"count": len(checked.distractors), "split": "gallery",
                        "pids": sorted({c.pid for c in checked.distractors}),
                        "reason": "distractors of the preset (Market-1501: pid 0), gallery only"},
        "skipped": {"count": len(checked.skipped),
                    "by_reason": dict(Counter(_reason_kind(r) for _, r in checked.skipped)),
                    "items": [{"item": i, "reason": r} for i, r in checked.skipped]},
        "manifest": osp.join(osp.abspath(out_dir), MANIFEST_NAME),
    }
    if jitter_info is not None:
        summary["box_jitter"] = jitter_info
    with open(osp.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(" of ")[0].split(" as ")[0]
