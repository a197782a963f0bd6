"""Synthetic pedestrians in Market-1501 layout: the embedded default dataset.

Makes the paper's problem real at CPU scale: people with part-specific appearance (head, upper
body with texture, sleeves, lower body, shoes, bags), hard negatives that differ from another
identity in one part only, cameras with their own clutter, colour cast, blur and noise,
detection errors (scale and shift of the box: heads or feet cut off, Fig. 1) and occluders,
pose and viewpoint changes; and, per image, what a human parsing tool (LIP label map) and a
person segmentation tool would output, with a configurable failure rate (Sec. 3.2, Fig. 4).

Layout (contract 1 of docs/ARCHITECTURE.md)::

    <root>/synthetic_pedestrians/{bounding_box_train,bounding_box_test,query}/PPPP_cCs1_FFFFFF_00.jpg
    <root>/synthetic_pedestrians/maps/<split>/<stem>_{parsing,segmentation,person}.png
    <root>/synthetic_pedestrians/annotations.csv, generator.json
    <root>/synthetic_pedestrians/gt_bbox/PPPP_cCs1_FFFFFF_00.jpg   (gt_bbox_per_id_cam > 0)

torchreid's own ``market1501`` parser reads the image folders unchanged (``*.jpg``, camera
1-6, pid <= 1501); maps are PNG so that parser never sees them. ``gt_bbox/`` mimics the
Market-1501 release's hand-drawn boxes for multi-query testing
(:mod:`mpn_plugin.evaluation.multi_query`): per test identity and camera, a copy of the query
image plus ``gt_bbox_per_id_cam`` more crops without detection error.

Examples::

    >>> from mpn_plugin.data.synthetic import SyntheticConfig, generate_synthetic_dataset
    >>> summary = generate_synthetic_dataset('data', SyntheticConfig(seed=0))
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

DATASET_DIR = "synthetic_pedestrians"
GENERATOR_VERSION = "1.0"
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
GT_BBOX = "gt_bbox"  # multi-query boxes (SyntheticConfig.gt_bbox_per_id_cam > 0)

# LIP label ids (what a human parsing tool gives)
HAIR, FACE, UPPER, PANTS, SKIRT = 2, 13, 5, 9, 12
L_ARM, R_ARM, L_LEG, R_LEG, L_SHOE, R_SHOE = 14, 15, 16, 17, 18, 19
BAG = 255  # internal only: drawn in the person mask, background (0) in the parsing map

PART_GROUPS = ("head", "upper", "lower", "shoes", "bag")


@dataclass
class SyntheticConfig:
    """Everything that defines the generated dataset (its hash names the dataset version).

    Attributes:
        num_train_ids, num_test_ids (int): identities per split (<= 1501 in total).
        images_per_id (int): images per identity (>= 2 per camera it is seen by).
        num_cameras (int): 2..6 (Market-1501 parser limit).
        height, width (int): image size.
        seed (int): everything is deterministic given the config.
        hard_negative_share (float): share of identities made as a one-part mutation of another.
        map_failure_rate (float): per tool, share of images whose map is missing or corrupted
            (half each).
        error_free_boxes (bool): no detection errors (Table 1, "Baseline (UB)").
        box_scale (tuple): range of the person's scale in the box.
        box_shift_std (tuple): std of the vertical / horizontal box shift (fractions of H, W).
        occluder_prob (float): share of images with a partial occluder.
        gt_bbox_per_id_cam (int): extra query-side crops per test identity and camera in
            ``gt_bbox/`` (multi-query, Table 5); 0 = no ``gt_bbox/`` (and the same hash and
            files as before this option existed).
        workers (int): processes (not part of the hash).
    """
    num_train_ids: int = 120
    num_test_ids: int = 100
    images_per_id: int = 12
    num_cameras: int = 6
    height: int = 128
    width: int = 64
    seed: int = 0
    hard_negative_share: float = 0.3
    map_failure_rate: float = 0.1
    error_free_boxes: bool = False
    box_scale: Tuple[float, float] = (0.85, 1.2)
    box_shift_std: Tuple[float, float] = (0.1, 0.06)
    occluder_prob: float = 0.15
    gt_bbox_per_id_cam: int = 0
    workers: int = 2

    def __post_init__(self):
        if not 2 <= self.num_cameras <= 6:
            raise ValueError("num_cameras must be in 2..6 (torchreid's Market-1501 parser)")
        if self.num_train_ids + self.num_test_ids > 1501:
            raise ValueError("at most 1501 identities (torchreid's Market-1501 parser)")
        if self.images_per_id < 4:
            raise ValueError("images_per_id must be >= 4 (two cameras x two images)")
        if self.gt_bbox_per_id_cam < 0:
            raise ValueError("gt_bbox_per_id_cam must be >= 0")


def _config_dict(cfg: SyntheticConfig) -> Dict:
    """The config as stored; ``gt_bbox_per_id_cam`` only when > 0 (older datasets unchanged)."""
    d = dataclasses.asdict(cfg)
    if not d["gt_bbox_per_id_cam"]:
        d.pop("gt_bbox_per_id_cam")
    return d


def config_hash(cfg: SyntheticConfig) -> str:
    """sha256 of the canonical JSON of the config (``workers`` excluded)."""
    d = _config_dict(cfg)
    d.pop("workers")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ identities
def _color(rng, lo=20, hi=235):
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


SKIN = [(224, 198, 172), (198, 160, 130), (160, 118, 90), (110, 80, 60), (236, 214, 196)]


def random_identity(rng: np.random.Generator) -> Dict:
    """Appearance attributes of one person, grouped by body part (PART_GROUPS); plain JSON
    types (colours as lists) so identities compare equal after a JSON round trip."""
    return json.loads(json.dumps({
        "head": {"skin": SKIN[rng.integers(len(SKIN))], "hair": _color(rng, 10, 140),
                 "long_hair": bool(rng.random() < 0.35)},
        "upper": {"color": _color(rng), "texture": str(rng.choice(["solid", "stripes", "checks", "print"])),
                  "color2": _color(rng), "long_sleeves": bool(rng.random() < 0.5)},
        "lower": {"type": str(rng.choice(["trousers", "shorts", "skirt"], p=[0.6, 0.2, 0.2])),
                  "color": _color(rng)},
        "shoes": {"color": _color(rng, 0, 200)},
        "bag": {"type": str(rng.choice(["none", "backpack", "handbag"], p=[0.5, 0.3, 0.2])),
                "color": _color(rng)},
        "build": {"width": float(rng.uniform(0.85, 1.15))},
    }))


def mutate_one_part(identity: Dict, rng: np.random.Generator) -> Tuple[Dict, str]:
    """A hard negative: a copy of ``identity`` with exactly one part group changed."""
    new = json.loads(json.dumps(identity))
    group = str(rng.choice(PART_GROUPS))
    fresh = random_identity(rng)[group]
    if group == "bag" and identity["bag"]["type"] == fresh["type"] == "none":
        fresh["type"] = "backpack"
    new[group] = fresh
    return new, group


def part_differences(a: Dict, b: Dict) -> int:
    """Number of part groups in which two identities differ."""
    return sum(a[g] != b[g] for g in PART_GROUPS)


def make_identities(cfg: SyntheticConfig) -> List[Dict]:
    """All identities (train first), with ``hard_negative_share`` made as one-part mutations of
    an identity of the same split."""
    rng = np.random.default_rng([cfg.seed, 7])
    ids: List[Dict] = []
    for split_start, n in ((0, cfg.num_train_ids), (cfg.num_train_ids, cfg.num_test_ids)):
        n_hard = int(round(cfg.hard_negative_share * n))
        for i in range(n):
            if i >= n - n_hard and i > 0:
                src = split_start + int(rng.integers(0, n - n_hard))
                ident, _ = mutate_one_part(ids[src], rng)
                ident["mutation_of"] = src + 1
            else:
                ident = random_identity(rng)
            ids.append(ident)
    return ids


# ------------------------------------------------------------------------------ rendering
def _texture(h, w, attrs, rng):
    c1, c2 = np.array(attrs["color"], np.uint8), np.array(attrs["color2"], np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = c1
    t = attrs["texture"]
    yy, xx = np.mgrid[0:h, 0:w]
    if t == "stripes":
        img[(yy // 6) % 2 == 0] = c2
    elif t == "checks":
        img[((yy // 8) + (xx // 8)) % 2 == 0] = c2
    elif t == "print":
        for _ in range(6):
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), 5,
                       tuple(int(v) for v in c2), -1)
    return img


def render_person(identity: Dict, view: str, pose: Dict, size: Tuple[int, int],
                  box: Tuple[float, float, float], rng: np.random.Generator
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one person into an ``size`` (H, W) frame.

    Args:
        view (str): ``front``, ``back`` or ``side``.
        pose (dict): ``arm`` (radians, swing of each arm), ``stride`` (leg spread).
        box (tuple): (scale, dy, dx): person height = 0.9 * H * scale, shifted by dy * H, dx * W
            from the centred position (detection error).

    Returns:
        (rgb (H, W, 3) uint8 on black, labels (H, W) uint8: LIP ids, BAG for bags, 0 elsewhere)
    """
    H, W = size
    scale, dy, dx = box
    ph = 0.9 * H * scale
    top = (H - ph) / 2 + dy * H
    cx = W / 2 + dx * W
    wf = identity["build"]["width"] * (0.7 if view == "side" else 1.0)
    P = lambda x, y: (int(round(cx + x * ph)), int(round(top + y * ph)))  # noqa: E731
    rgb = np.zeros((H, W, 3), np.uint8)
    lab = np.zeros((H, W), np.uint8)
    skin = identity["head"]["skin"]

    def poly(points, label, color):
        pts = np.array([P(*p) for p in points], np.int32)
        cv2.fillPoly(rgb, [pts], color)
        cv2.fillPoly(lab, [pts], label)

    def limb(p0, p1, thick, label, color):
        a, b, t = P(*p0), P(*p1), max(1, int(round(thick * ph)))
        cv2.line(rgb, a, b, color, t)
        cv2.line(lab, a, b, label, t)

    lower, up = identity["lower"], identity["upper"]
    # legs (with stride), shoes
    for side, leg_lab, shoe_lab in ((-1, L_LEG, L_SHOE), (1, R_LEG, R_SHOE)):
        hip, ankle = (side * 0.045 * wf, 0.5), (side * (0.04 * wf + pose["stride"]), 0.93)
        knee = ((hip[0] + ankle[0]) / 2, 0.71)
        if lower["type"] == "trousers":
            limb(hip, knee, 0.075, PANTS, lower["color"])
            limb(knee, ankle, 0.065, PANTS, lower["color"])
        else:
            limb(hip, knee, 0.055, leg_lab, skin)
            limb(knee, ankle, 0.05, leg_lab, skin)
            if lower["type"] == "shorts":
                limb(hip, knee, 0.075, PANTS, lower["color"])
        cv2.ellipse(rgb, P(ankle[0] + 0.01 * side, 0.965), (max(1, int(0.04 * ph)), max(1, int(0.025 * ph))),
                    0, 0, 360, identity["shoes"]["color"], -1)
        cv2.ellipse(lab, P(ankle[0] + 0.01 * side, 0.965), (max(1, int(0.04 * ph)), max(1, int(0.025 * ph))),
                    0, 0, 360, shoe_lab, -1)
    if lower["type"] == "skirt":
        poly([(-0.1 * wf, 0.48), (0.1 * wf, 0.48), (0.15 * wf, 0.68), (-0.15 * wf, 0.68)], SKIRT,
             lower["color"])
    # torso with texture
    torso = [(-0.11 * wf, 0.15), (0.11 * wf, 0.15), (0.1 * wf, 0.52), (-0.1 * wf, 0.52)]
    tmask = np.zeros((H, W), np.uint8)
    cv2.fillPoly(tmask, [np.array([P(*p) for p in torso], np.int32)], 1)
    tex = _texture(H, W, up, rng)
    rgb[tmask > 0] = tex[tmask > 0]
    lab[tmask > 0] = UPPER
    # backpack behind (back view: over the torso; side: protruding)
    bag = identity["bag"]
    if bag["type"] == "backpack" and view in ("back", "side"):
        x0 = -0.09 * wf if view == "back" else 0.07 * wf
        poly([(x0, 0.18), (x0 + 0.18 * wf * (1 if view == "back" else 0.6), 0.18),
              (x0 + 0.18 * wf * (1 if view == "back" else 0.6), 0.45), (x0, 0.45)], BAG, bag["color"])
    # arms
    arms = [(-1, L_ARM), (1, R_ARM)] if view != "side" else [(1, R_ARM)]
    for side, arm_lab in arms:
        sh = (side * 0.12 * wf, 0.17)
        ang = pose["arm"][0 if side < 0 else 1]
        el = (sh[0] + side * 0.03 + 0.15 * np.sin(ang) * 0.5, sh[1] + 0.15 * np.cos(ang))
        ha = (el[0] + 0.14 * np.sin(ang), el[1] + 0.14 * np.cos(ang))
        sleeve = (UPPER, up["color"])
        limb(sh, el, 0.05, *sleeve)  # upper arm: always covered (short or long sleeves)
        limb(el, ha, 0.042, *(sleeve if up["long_sleeves"] else (arm_lab, skin)))
        if bag["type"] == "handbag" and side == 1:
            hx, hy = ha
            poly([(hx - 0.04, hy), (hx + 0.05, hy), (hx + 0.05, hy + 0.09), (hx - 0.04, hy + 0.09)],
                 BAG, bag["color"])
    # head: face (front/side) or hair (back), hair cap, long hair
    hc, hr = P(0, 0.075), (max(2, int(0.05 * ph * (0.9 if view == "side" else 1))), max(2, int(0.065 * ph)))
    face_color, face_lab = (skin, FACE) if view != "back" else (identity["head"]["hair"], HAIR)
    cv2.ellipse(rgb, hc, hr, 0, 0, 360, face_color, -1)
    cv2.ellipse(lab, hc, hr, 0, 0, 360, face_lab, -1)
    cv2.ellipse(rgb, hc, hr, 0, 180, 360, identity["head"]["hair"], -1)
    cv2.ellipse(lab, hc, hr, 0, 180, 360, HAIR, -1)
    if identity["head"]["long_hair"] and view != "front":
        poly([(-0.05, 0.07), (0.05, 0.07), (0.055, 0.2), (-0.055, 0.2)], HAIR, identity["head"]["hair"])
    if view == "side" and pose.get("mirror"):
        rgb, lab = rgb[:, ::-1].copy(), lab[:, ::-1].copy()
    return rgb, lab


def camera_background(cam: int, cfg: SyntheticConfig) -> np.ndarray:
    """A camera's structured clutter (its own colours, lines and blobs)."""
    rng = np.random.default_rng([cfg.seed, 1000 + cam])
    H, W = cfg.height, cfg.width
    base = np.array(_color(rng, 40, 200), np.float32)
    grad = np.linspace(0.7, 1.2, H, dtype=np.float32)[:, None, None]
    bg = np.clip(base * grad * np.ones((H, W, 1), np.float32), 0, 255).astype(np.uint8)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, W)), int(rng.integers(0, H))
        cv2.rectangle(bg, (x0, y0), (x0 + int(rng.integers(5, 30)), y0 + int(rng.integers(5, 40))),
                      _color(rng), -1)
    for _ in range(4):
        cv2.line(bg, (int(rng.integers(0, W)), 0), (int(rng.integers(0, W)), H), _color(rng), 2)
    return bg


def _corrupt(mask: np.ndarray, rng) -> np.ndarray:
    """A failed tool output: random blobs or a badly shifted copy."""
    out = np.zeros_like(mask)
    if rng.random() < 0.5:
        H, W = mask.shape
        for _ in range(3):
            cv2.circle(out, (int(rng.integers(0, W)), int(rng.integers(0, H))),
                       int(rng.integers(3, 12)), int(rng.choice(np.unique(mask)[-1:])), -1)
    else:
        out = np.roll(mask, int(mask.shape[0] * rng.uniform(0.3, 0.6)), axis=0)
    return out


def _render_image(args):
    cfg, pid, ident, cam, idx, split, out_dir = args
    rng = np.random.default_rng([cfg.seed, pid, idx])
    H, W = cfg.height, cfg.width
    S = 2  # render at 2x, then downsample (anti-aliasing)
    view = str(rng.choice(["front", "back", "side"]))
    pose = {"arm": rng.uniform(-0.5, 0.5, 2).tolist(), "stride": float(rng.uniform(-0.04, 0.04)),
            "mirror": bool(rng.random() < 0.5)}
    if cfg.error_free_boxes:
        box = (1.0, 0.0, 0.0)
    else:
        box = (float(rng.uniform(*cfg.box_scale)), float(rng.normal(0, cfg.box_shift_std[0])),
               float(rng.normal(0, cfg.box_shift_std[1])))
    rgb, lab = render_person(ident, view, pose, (H * S, W * S), box, rng)
    person = (lab > 0).astype(np.uint8)
    occluded = False
    if rng.random() < cfg.occluder_prob:  # a pole / object in front of part of the body
        occluded = True
        x0 = int(rng.integers(0, W * S))
        y0 = int(rng.integers(H * S // 3, H * S))
        occ = np.zeros_like(person)
        cv2.rectangle(occ, (x0, y0), (x0 + int(rng.integers(W * S // 5, W * S // 2)), H * S), 1, -1)
        color = _color(rng)
        rgb[occ > 0] = color
        lab[occ > 0] = 0
        person[occ > 0] = 0
    # compose on the camera's background, illumination cast, blur, noise
    bg = cv2.resize(camera_background(cam, cfg), (W * S, H * S), interpolation=cv2.INTER_LINEAR)
    shift = rng.integers(-6, 7, 2)
    bg = np.roll(bg, tuple(int(s) for s in shift), axis=(0, 1))
    m = (lab > 0) | (person > 0)
    img = np.where(m[..., None], rgb, bg)
    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32)
    crng = np.random.default_rng([cfg.seed, 2000 + cam])
    cast = crng.uniform(0.75, 1.25, 3) * rng.uniform(0.85, 1.15)
    img = img * cast[None, None, :]
    sigma = float(rng.uniform(0, 1.0))
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = np.clip(img + rng.normal(0, rng.uniform(1, 6), img.shape), 0, 255).astype(np.uint8)
    lab_s = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST)
    person_s = (cv2.resize(person.astype(np.float32), (W, H), interpolation=cv2.INTER_AREA) >= 0.5)
    parsing = np.where(lab_s == BAG, 0, lab_s).astype(np.uint8)
    seg = person_s.astype(np.uint8) * 255
    # segmentation tool: slightly imperfect boundary
    seg = cv2.dilate(seg, np.ones((2, 2), np.uint8)) if rng.random() < 0.5 else cv2.erode(seg, np.ones((2, 2), np.uint8))
    status = {}
    for name, arr in (("parsing", parsing), ("segmentation", seg)):
        u = rng.random()
        status[name] = ("missing" if u < cfg.map_failure_rate / 2 else
                        "corrupted" if u < cfg.map_failure_rate else "ok")
        if status[name] == "corrupted":
            arr[...] = _corrupt(arr.copy(), rng)
    stem = f"{pid:04d}_c{cam}s1_{idx:06d}_00"
    cv2.imwrite(osp.join(out_dir, split, stem + ".jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    mdir = osp.join(out_dir, "maps", split)
    cv2.imwrite(osp.join(mdir, stem + "_person.png"), person_s.astype(np.uint8) * 255)
    if status["parsing"] != "missing":
        cv2.imwrite(osp.join(mdir, stem + "_parsing.png"), parsing)
    if status["segmentation"] != "missing":
        cv2.imwrite(osp.join(mdir, stem + "_segmentation.png"), seg)
    # cut flags: head centre / feet above or below the frame
    ph = 0.9 * H * box[0]
    top = (H - ph) / 2 + box[1] * H
    return {"split": split, "file": stem + ".jpg", "pid": pid, "camid": cam, "view": view,
            "head_cut": int(top + 0.075 * ph < 0), "feet_cut": int(top + 0.965 * ph > H),
            "occluded": int(occluded), "parsing_status": status["parsing"],
            "segmentation_status": status["segmentation"], "scale": round(box[0], 4),
            "shift_y": round(box[1], 4), "shift_x": round(box[2], 4)}


def _plan(cfg: SyntheticConfig, identities: List[Dict], out_dir: str):
    """(cfg, pid, identity, cam, idx, split, out_dir) for every image; test identities get
    >= 2 cameras with >= 2 images each, one query per (identity, camera)."""
    jobs = []
    rng = np.random.default_rng([cfg.seed, 11])
    frame = 0
    for i, ident in enumerate(identities):
        pid = i + 1
        train = i < cfg.num_train_ids
        n_cams = int(rng.integers(2, min(cfg.num_cameras, cfg.images_per_id // 2, 4) + 1))
        cams = sorted(rng.choice(np.arange(1, cfg.num_cameras + 1), n_cams, replace=False).tolist())
        first_of_cam = set()
        for j in range(cfg.images_per_id):
            cam = cams[j % n_cams]
            frame += 1
            if train:
                split = "bounding_box_train"
            elif cam not in first_of_cam:
                split, _ = "query", first_of_cam.add(cam)
            else:
                split = "bounding_box_test"
            jobs.append((cfg, pid, ident, cam, frame, split, out_dir))
    return jobs


def _plan_gt_bbox(cfg: SyntheticConfig, jobs: List) -> List:
    """``gt_bbox_per_id_cam`` crops per (test identity, camera) of the queries, numbered after
    every other frame (the other images do not change); boxes without detection error, as
    the hand-drawn boxes of Market-1501's ``gt_bbox/``."""
    hand_drawn = dataclasses.replace(cfg, error_free_boxes=True)
    frame = len(jobs)
    extra = []
    for _, pid, ident, cam, _, split, out_dir in jobs:
        if split == "query":
            for _ in range(cfg.gt_bbox_per_id_cam):
                frame += 1
                extra.append((hand_drawn, pid, ident, cam, frame, GT_BBOX, out_dir))
    return extra


def generate_synthetic_dataset(root: str, cfg: Optional[SyntheticConfig] = None,
                               overwrite: bool = False, progress: bool = True) -> Dict:
    """Write the dataset under ``<root>/synthetic_pedestrians`` (see the module docstring).

    Returns quickly when the folder already holds the same config (same hash); raises
    ``FileExistsError`` when it holds another one, unless ``overwrite``.

    Returns:
        dict: counts, statistics (head/feet cut shares, map failure rates, hard negatives) and
        the time taken.
    """
    cfg = cfg or SyntheticConfig()
    out_dir = osp.join(root, DATASET_DIR)
    meta_path = osp.join(out_dir, "generator.json")
    h = config_hash(cfg)
    if osp.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("config_hash") == h and not overwrite:
            return dict(meta["summary"], reused=True)
        if not overwrite:
            raise FileExistsError(
                f"'{out_dir}' holds a synthetic dataset made with another config (hash "
                f"{meta.get('config_hash')} != {h}); pass overwrite=True (--overwrite) or "
                f"another --root")
    if osp.exists(out_dir):
        shutil.rmtree(out_dir)
    for split in SPLITS + ((GT_BBOX,) if cfg.gt_bbox_per_id_cam else ()):
        os.makedirs(osp.join(out_dir, split))
        os.makedirs(osp.join(out_dir, "maps", split))
    start = time.time()
    identities = make_identities(cfg)
    jobs = _plan(cfg, identities, out_dir)
    if cfg.gt_bbox_per_id_cam:
        jobs += _plan_gt_bbox(cfg, jobs)
    from ..progress import progress_bar as tqdm  # throttled without a terminal
    if cfg.workers > 1:
        with Pool(cfg.workers) as pool:
            rows = list(tqdm(pool.imap(_render_image, jobs, chunksize=32), total=len(jobs),
                             disable=not progress, desc="synthetic pedestrians"))
    else:
        rows = [_render_image(j) for j in tqdm(jobs, disable=not progress, desc="synthetic pedestrians")]
    # statistics over the three usual splits; gt_bbox rows are listed after them
    gt_bbox_rows = [r for r in rows if r["split"] == GT_BBOX]
    rows = [r for r in rows if r["split"] != GT_BBOX]
    if cfg.gt_bbox_per_id_cam:  # Market-1501's query crops are gt_bbox boxes too
        for r in rows:
            if r["split"] == "query":
                shutil.copyfile(osp.join(out_dir, "query", r["file"]),
                                osp.join(out_dir, GT_BBOX, r["file"]))
                gt_bbox_rows.append(dict(r, split=GT_BBOX))
    with open(osp.join(out_dir, "annotations.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + gt_bbox_rows)
    n = len(rows)
    summary = {
        "images": n,
        "split_sizes": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "train_ids": cfg.num_train_ids, "test_ids": cfg.num_test_ids,
        "head_cut_share": round(sum(r["head_cut"] for r in rows) / n, 4),
        "feet_cut_share": round(sum(r["feet_cut"] for r in rows) / n, 4),
        "occluded_share": round(sum(r["occluded"] for r in rows) / n, 4),
        "parsing_failure_share": round(sum(r["parsing_status"] != "ok" for r in rows) / n, 4),
        "segmentation_failure_share": round(sum(r["segmentation_status"] != "ok" for r in rows) / n, 4),
        "hard_negative_ids": sum("mutation_of" in i for i in identities),
        "seconds": round(time.time() - start, 1),
    }
    if gt_bbox_rows:
        summary["split_sizes"][GT_BBOX] = len(gt_bbox_rows)
    with open(meta_path, "w") as f:
        json.dump({"config": _config_dict(cfg), "config_hash": h,
                   "generator_version": GENERATOR_VERSION, "summary": summary,
                   "identities": identities}, f, indent=1)
    return summary
