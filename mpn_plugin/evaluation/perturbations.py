"""Controlled query perturbations for robustness sweeps: detection errors and occluders.

The paper's case for MPN is robustness to misaligned parts (Fig. 1a: pedestrian detection errors
change the position and scale of the body parts; Sec. 2: occlusions break part detection). These
functions make such errors at a chosen amount on a query crop, so that retrieval can be measured
as the amount grows (``tools/robustness_sweep.py``, :mod:`mpn_plugin.evaluation.robustness`).

Every function takes an RGB ``uint8`` image (H, W, 3), as torchreid reads it (``read_image``,
PIL -> ``numpy.asarray``), and returns a new array: the input is never modified. They act on
the crop before the test transform (resize + normalise), so they compose with any model and
input size. The random ones are deterministic by ``seed`` (an int or a sequence of ints, as
``numpy.random.default_rng`` takes it); at the clean amount (shift 0, scale 1, cut 0, area 0)
the output equals the input bit for bit.

Conventions (the choices a real detector does not dictate):

* Fill. Pixels that would come from outside the original crop (shift, zoom out) take the
  constant :data:`MEAN_FILL`, torchreid's ImageNet mean colour, i.e. 0 after normalisation: the
  frame around a dataset crop is not available, and a constant invents no content (no edge
  replication that would smear the feet or the head over the border).
* Shift: the box keeps its size and moves; what leaves the box is lost, what enters is fill.
* Cut (head or feet): the box keeps its other edges and loses a band at the top or bottom; the
  result is the shorter crop, which the test transform resizes to the model's input like any
  detection, so the rest of the body is stretched vertically (no fill: a truncated detection
  contains no blank band).
* Rectangle occluder: a rectangle of the requested share of the crop area, random aspect ratio
  and position, constant (:data:`MEAN_FILL`) or uniform noise fill.
* Other-pedestrian occluder, after BIPO ("Batch-wise Inter-Person Occlusion", Somers et al.,
  "Keypoint Promptable Re-Identification", ECCV 2024): BIPO takes the image of a *different*
  person, resizes it to the target's size and pastes it (alpha-blended with its human-parsing
  silhouette) with its centre drawn uniformly across the width and between 0.55 H and 0.75 H, so
  that the occluder stands in front, its upper body over the target's lower body, entering from
  a side. Here the occluder is a gallery image of another identity, resized to the query's size
  and shifted the same way, with the shift solved so that it covers exactly the requested share
  of the area. Without parsing labels at test time the occluder is pasted as its rectangular
  crop (its background comes with it), not as a silhouette.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = ["MEAN_FILL", "vertical_shift", "scale_box", "cut_box", "occlude_rectangle",
           "choose_occluder", "occlude_with_pedestrian", "Perturbation", "PERTURBATIONS",
           "perturbations", "perturb", "image_seed"]

#: torchreid's ImageNet mean (0.485, 0.456, 0.406) in 0..255: 0 after the test normalisation
MEAN_FILL = (124, 116, 104)
#: BIPO's range of the occluder's top edge, as a fraction of the height (centre at 0.55-0.75 H)
BIPO_TOP = (0.05, 0.25)
#: aspect ratios (relative to the crop's) of random rectangle occluders: log-uniform in this range
RECT_ASPECT = (0.5, 2.0)

Seed = Union[int, Sequence[int]]
Fill = Union[Tuple[int, int, int], str]


def _check_image(image: np.ndarray) -> Tuple[int, int]:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got "
                         f"{getattr(image, 'dtype', type(image).__name__)} "
                         f"{getattr(image, 'shape', '')}; convert with np.asarray(pil_image)")
    return image.shape[0], image.shape[1]


def _pixels(fraction: float, size: int) -> int:
    """``fraction * size`` rounded half away from zero."""
    x = fraction * size
    return int(np.sign(x) * np.floor(abs(x) + 0.5))


def _filled(shape, fill) -> np.ndarray:
    return np.broadcast_to(np.asarray(fill, np.uint8), shape).copy()


def vertical_shift(image: np.ndarray, fraction: float, fill=MEAN_FILL) -> np.ndarray:
    """The detection box moved vertically by ``fraction`` of its height, same size.

    Positive ``fraction``: the box moves down by ``d = round(fraction * H)`` pixels, so the
    person moves up in the crop by ``d`` rows: the top ``d`` rows (head) leave the box and the
    bottom ``d`` rows come from below the original box, here ``fill``. Negative: the box moves
    up (feet lost, fill above the head).

    Args:
        image (numpy.ndarray): (H, W, 3) uint8 RGB crop.
        fraction (float): box displacement / box height, in (-1, 1).
        fill (tuple): RGB colour of the rows that enter the box.

    Returns:
        numpy.ndarray: (H, W, 3) uint8.

    Examples::

        >>> img = np.zeros((32, 16, 3), np.uint8); img[10] = 255
        >>> np.flatnonzero(vertical_shift(img, 0.25, fill=0)[:, 0, 0])   # row 10 -> 10 - 8
        array([2])
    """
    H, _ = _check_image(image)
    if not -1 < fraction < 1:
        raise ValueError(f"vertical shift must be a fraction of the height in (-1, 1), "
                         f"got {fraction}")
    d = _pixels(fraction, H)
    out = _filled(image.shape, fill)
    if d >= 0:
        out[:H - d] = image[d:]                 # row y of the new box = row y + d of the old
    else:
        out[-d:] = image[:H + d]
    return out


def scale_box(image: np.ndarray, factor: float, fill=MEAN_FILL) -> np.ndarray:
    """The detection box scaled by ``factor`` about its centre, resized back to H x W.

    ``factor < 1``: a tighter box (zoom in): the person is enlarged, head, feet and sides are
    cut. ``factor > 1``: a looser box (zoom out): the person shrinks towards the centre and the
    border comes from outside the original box (``fill``). Bilinear sampling (OpenCV); the centre
    pixel of an odd-sized crop keeps its value.

    Args:
        image (numpy.ndarray): (H, W, 3) uint8 RGB crop.
        factor (float): new box size / old box size, > 0.
        fill (tuple): RGB colour outside the original crop.

    Returns:
        numpy.ndarray: (H, W, 3) uint8.

    Examples::

        >>> out = scale_box(np.full((33, 17, 3), 200, np.uint8), 1.5, fill=0)
        >>> out[16, 8].tolist(), out[0, 0].tolist()
        ([200, 200, 200], [0, 0, 0])
    """
    H, W = _check_image(image)
    if not factor > 0:
        raise ValueError(f"box scale factor must be > 0, got {factor}")
    if factor == 1:
        return image.copy()
    # output pixel p samples the source at c + factor * (p - c), c = the crop's centre
    # (pixel centres at integer coordinates)
    cx, cy = (W - 1) / 2.0, (H - 1) / 2.0
    M = np.float32([[factor, 0, cx * (1 - factor)], [0, factor, cy * (1 - factor)]])
    return cv2.warpAffine(image, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT,
                          borderValue=tuple(int(v) for v in np.broadcast_to(fill, (3,))))


def cut_box(image: np.ndarray, fraction: float, side: str = "top") -> np.ndarray:
    """A box whose top (``side='top'``: head cut) or bottom (``'bottom'``: feet cut) edge moved
    inwards by ``fraction`` of the height.

    Returns the remaining rows, a crop ``H - round(fraction * H)`` high (at least 1 row): the
    test transform resizes it to the model's input as it does any detection, so the rest of the
    body is stretched vertically, as with a truncated detection box.

    Args:
        image (numpy.ndarray): (H, W, 3) uint8 RGB crop.
        fraction (float): share of the height removed, in [0, 1).
        side (str): ``top`` or ``bottom``.

    Returns:
        numpy.ndarray: (H', W, 3) uint8.

    Examples::

        >>> cut_box(np.zeros((32, 16, 3), np.uint8), 0.25, "bottom").shape
        (24, 16, 3)
    """
    H, _ = _check_image(image)
    if not 0 <= fraction < 1:
        raise ValueError(f"cut must be a fraction of the height in [0, 1), got {fraction}")
    if side not in ("top", "bottom"):
        raise ValueError(f"cut side must be 'top' (head) or 'bottom' (feet), got {side!r}")
    d = min(_pixels(fraction, H), H - 1)
    return (image[d:] if side == "top" else image[:H - d]).copy()


def _check_area(area: float):
    if not 0 <= area <= 1:
        raise ValueError(f"occluded area must be a fraction of the crop area in [0, 1], got {area}")


def _rectangle_size(area: float, H: int, W: int, height_fraction: float) -> Tuple[int, int]:
    """(h, w) in pixels with h ~ ``height_fraction * H`` and h * w ~ ``area * H * W`` (error
    below h / 2 pixels), both within the crop."""
    h = int(np.clip(_pixels(min(height_fraction, 1.0), H), 1, H))
    w = int(np.clip(_pixels(area * H / h, W), 0, W))          # round(area * H * W / h)
    return h, w


def occlude_rectangle(image: np.ndarray, area: float, seed: Seed = 0,
                      fill: Fill = MEAN_FILL) -> np.ndarray:
    """A rectangle covering ``area`` of the crop, at a random position, pasted over the crop.

    Its aspect ratio (relative to the crop's) is log-uniform in :data:`RECT_ASPECT`, clipped so
    that it fits; its position is uniform over the places where it fits. The random draws do
    not depend on ``area``: for a given seed the rectangle grows around the same spot.

    Args:
        image (numpy.ndarray): (H, W, 3) uint8 RGB crop.
        area (float): covered share of the crop area, in [0, 1] (exact within rounding to pixels:
            below half a row of the rectangle).
        seed (int or sequence of int): random state.
        fill (tuple or str): RGB colour, or ``"noise"`` (uniform random colours per pixel).

    Returns:
        numpy.ndarray: (H, W, 3) uint8.

    Examples::

        >>> out = occlude_rectangle(np.zeros((32, 16, 3), np.uint8), 0.25, seed=1, fill=(255,) * 3)
        >>> float((out[..., 0] == 255).mean())
        0.25
    """
    H, W = _check_image(image)
    _check_area(area)
    rng = np.random.default_rng(seed)
    aspect = np.exp(rng.uniform(*np.log(RECT_ASPECT)))        # (h / H) / (w / W)
    u_y, u_x = rng.uniform(size=2)
    out = image.copy()
    if area == 0:
        return out
    h, w = _rectangle_size(area, H, W, float(np.clip(np.sqrt(area * aspect), area, 1.0)))
    y0, x0 = _pixels(u_y, H - h), _pixels(u_x, W - w)
    if isinstance(fill, str):
        if fill != "noise":
            raise ValueError(f"occluder fill must be an RGB colour or 'noise', got {fill!r}")
        out[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        out[y0:y0 + h, x0:x0 + w] = np.asarray(fill, np.uint8)
    return out


def choose_occluder(query_pid: int, gallery_pids: Sequence[int], seed: Seed = 0) -> int:
    """Index of a gallery image of another identity than ``query_pid``, uniformly at random.

    Args:
        query_pid (int): the query's identity.
        gallery_pids (array-like): (G,) identities of the candidate occluders.
        seed (int or sequence of int): random state.

    Raises:
        ValueError: when every candidate has the query's identity.

    Examples::

        >>> choose_occluder(3, [3, 3, 5], seed=0)
        2
    """
    candidates = np.flatnonzero(np.asarray(gallery_pids).reshape(-1) != query_pid)
    if len(candidates) == 0:
        raise ValueError(f"no occluder of another identity than {query_pid}: the gallery holds "
                         "that identity only")
    return int(candidates[np.random.default_rng(seed).integers(len(candidates))])


def occlude_with_pedestrian(image: np.ndarray, area: float, occluder: np.ndarray,
                            seed: Seed = 0) -> np.ndarray:
    """Another pedestrian's crop pasted over the query, covering ``area`` of it (after BIPO,
    see the module docstring).

    The occluder is resized to the query's size and shifted down and to one side (random): its
    top edge lands at ``t * H`` with ``t`` uniform in :data:`BIPO_TOP` (BIPO's range; lowered to
    ``1 - area`` when a larger area needs more height), and its side is shifted so that the
    overlap, the occluder's upper part over the query's lower part, covers ``area`` of the crop.
    Rectangular paste (no silhouette). The random draws do not depend on ``area``.

    Args:
        image (numpy.ndarray): (H, W, 3) uint8 RGB query crop.
        area (float): covered share of the crop area, in [0, 1] (exact within rounding).
        occluder (numpy.ndarray): (H', W', 3) uint8 RGB crop of another identity
            (:func:`choose_occluder`).
        seed (int or sequence of int): random state.

    Returns:
        numpy.ndarray: (H, W, 3) uint8.

    Examples::

        >>> q, o = np.zeros((32, 16, 3), np.uint8), np.full((64, 32, 3), 255, np.uint8)
        >>> covered = (occlude_with_pedestrian(q, 0.5, o, seed=0) == 255).all(2).mean()
        >>> round(float(covered), 1)
        0.5
    """
    H, W = _check_image(image)
    _check_image(occluder)
    _check_area(area)
    rng = np.random.default_rng(seed)
    top = rng.uniform(*BIPO_TOP)
    from_left = bool(rng.integers(2))
    out = image.copy()
    if area == 0:
        return out
    h, w = _rectangle_size(area, H, W, max(1.0 - top, area))
    if w == 0:
        return out
    occ = cv2.resize(occluder, (W, H), interpolation=cv2.INTER_LINEAR)
    # the occluder's top h rows over the query's bottom h rows; its inner w columns over the
    # query's w columns on the side it enters from
    if from_left:
        out[H - h:, :w] = occ[:h, W - w:]
    else:
        out[H - h:, W - w:] = occ[:h, :w]
    return out


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation of the sweep.

    Attributes:
        name (str): CLI / JSON name.
        fn (callable): ``fn(image, level, seed, occluder)`` -> perturbed image.
        levels (tuple): default sweep amounts.
        clean_level (float): the amount that leaves the image unchanged.
        axis (str): what the amount measures (x-axis label of its plot).
        summary_levels (tuple): amounts reported in the Markdown summary, when swept.
        needs_occluder (bool): takes a gallery image of another identity.
    """
    name: str
    fn: Callable
    levels: Tuple[float, ...]
    clean_level: float
    axis: str
    summary_levels: Tuple[float, ...]
    needs_occluder: bool = False

    def label(self, level: float) -> str:
        """Short label of an amount: ``+20%`` (shift), ``x0.8`` (scale), ``30%`` (others)."""
        if self.name == "scale":
            return f"x{level:g}"
        return f"{level * 100:+.0f}%" if self.name == "shift" else f"{level * 100:.0f}%"


_OCCLUSION_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
_CUT_LEVELS = (0.0, 0.1, 0.2, 0.3)


def perturbations(rect_fill: Fill = MEAN_FILL) -> Dict[str, Perturbation]:
    """Every perturbation of the sweep by name; ``rect_fill`` is the rectangle occluder's fill
    (an RGB colour or ``"noise"``)."""

    def person(image, level, seed, occluder):
        if occluder is None:
            raise ValueError("occlusion_person needs an occluder image (see choose_occluder)")
        return occlude_with_pedestrian(image, level, occluder, seed)

    return {p.name: p for p in (
        Perturbation("shift", lambda im, lv, sd, oc: vertical_shift(im, lv),
                     (-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3), 0.0,
                     "vertical box shift (fraction of height, + = box moves down)", (-0.2, 0.2)),
        Perturbation("scale", lambda im, lv, sd, oc: scale_box(im, lv),
                     (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3), 1.0,
                     "box scale (< 1: zoom in, > 1: zoom out)", (0.8, 1.2)),
        Perturbation("cut_head", lambda im, lv, sd, oc: cut_box(im, lv, "top"), _CUT_LEVELS,
                     0.0, "top of the box cut off (fraction of height)", (0.2,)),
        Perturbation("cut_feet", lambda im, lv, sd, oc: cut_box(im, lv, "bottom"), _CUT_LEVELS,
                     0.0, "bottom of the box cut off (fraction of height)", (0.2,)),
        Perturbation("occlusion_rect",
                     lambda im, lv, sd, oc: occlude_rectangle(im, lv, sd, rect_fill),
                     _OCCLUSION_LEVELS, 0.0, "occluded area, random rectangle (fraction of crop)",
                     (0.3,)),
        Perturbation("occlusion_person", person, _OCCLUSION_LEVELS, 0.0,
                     "occluded area, other pedestrian (fraction of crop)", (0.3,),
                     needs_occluder=True),
    )}


#: every perturbation of the sweep, by name (rectangle occluders with the constant fill)
PERTURBATIONS: Dict[str, Perturbation] = perturbations()


def image_seed(seed: int, perturbation: str, index: int) -> Tuple[int, int, int]:
    """The seed of query ``index`` under ``perturbation``: the same at every amount and for
    every model, so that an occluder grows at the same place and all models see the same images.
    """
    return (int(seed), zlib.crc32(perturbation.encode()), int(index))


def perturb(name: str, image: np.ndarray, level: float, seed: Seed = 0,
            occluder: Optional[np.ndarray] = None,
            registry: Optional[Dict[str, Perturbation]] = None) -> np.ndarray:
    """Apply the perturbation ``name`` (of ``registry``, default :data:`PERTURBATIONS`) at
    amount ``level``.

    Examples::

        >>> img = np.zeros((32, 16, 3), np.uint8)
        >>> np.array_equal(perturb("shift", img, 0.0), img)
        True
    """
    registry = registry or PERTURBATIONS
    if name not in registry:
        raise ValueError(f"unknown perturbation {name!r}; choose from {sorted(registry)}")
    return registry[name].fn(image, level, seed, occluder)
