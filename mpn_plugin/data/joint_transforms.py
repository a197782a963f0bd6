"""Joint augmentation: the coarse prior follows every geometric transform of the image.

MPN's coarse prior (paper Sec. 3.2) is a person mask of the *training image*; once the image is
flipped, enlarged and cropped by the online augmentation (Sec. 5.1), the prior must describe the
augmented image, not the original one. :class:`JointTransform` wraps the train ``Compose`` that
torchreid's ``build_transforms`` makes and applies every geometric op to the image and to its
person mask together:

- geometric ops (``Resize``, ``RandomHorizontalFlip``, ``RandomVerticalFlip``, torchreid's
  ``Random2DTranslation``, ``RandomCrop``, ``CenterCrop``, ``Pad``, ``RandomApply`` and nested
  ``Compose``) draw their random numbers exactly as the originals do (same generator, same order,
  same number of draws), so with the same RNG state the image is *identical* to what torchreid
  alone produces, and the same decision (coin, crop offset) is applied to the mask;
- photometric ops (``ColorJitter``, ``RandomPatch``, ``ToTensor``, ``Normalize``,
  ``RandomErasing``, ``ColorAugmentation``, ``Grayscale``...) run unchanged on the image and
  leave the mask as it is.

The mask stays at image resolution as float32 during the whole pipeline (sub-cell shifts
survive); it is reduced to the feature-map size afterwards (stage 2 of the prior pipeline,
``docs/ARCHITECTURE.md`` contract 2). Inside the pipeline it is carried as a PIL image of mode
``'F'``, so the very same ``torchvision.transforms.functional`` call that moves the image moves
the mask.

Mask resampling: resizes use the *same* filter as the image (PIL bilinear with its antialiasing
support, on the float mask). Measured with images whose content is the mask (128x64 ->
Resize 256x128 -> random_flip + random_crop, 200 seeds, image and mask thresholded at 0.5):
rectangle IoU 1.0000 mean / 1.0000 min with the image's filter vs 0.9999 / 0.9998 with nearest;
tilted ellipse 0.9997 / 0.9994 vs 0.9972 / 0.9947. The float mask also equals the image content
up to uint8 rounding (max |mask - img/255| = 0.004, against 0.75 with nearest), so soft
boundaries and sub-pixel shifts survive until the reduction to the feature map; nearest is not
used. Pads fill the mask with 0 in ``'constant'`` mode and use the image's mode otherwise (a
reflected border shows a reflected person).

Examples::

    >>> joint = JointTransform.from_compose(datamanager.transform_tr)
    >>> img_t, mask = joint(pil_image, person_mask)   # mask: (h, w) float32 at output size
    >>> shifted_img, shifted_mask = translate_pair(pil_image, person_mask, dx=6, dy=-4)
"""
from __future__ import annotations

import numbers
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .. import compat

__all__ = ["JointTransform", "register_joint_op", "register_photometric", "translate_pair",
           "offline_translation_shifts"]

Mask = Optional[np.ndarray]
#: a joint op: ``fn(t, img, mask) -> (img, mask)``; ``t`` is the transform object, ``img`` what
#: the previous op produced, ``mask`` a PIL image of mode ``'F'`` (float32) of the same size as
#: ``img``, or None. ``fn`` must draw random numbers exactly as ``t(img)`` does.
JointOp = Callable[[object, object, Optional[Image.Image]], Tuple[object, Optional[Image.Image]]]


# --------------------------------------------------------------------------- geometric ops
def _pil_resample(interpolation):
    """PIL resampling constant of a torchvision ``InterpolationMode`` or PIL int."""
    if isinstance(interpolation, T.InterpolationMode):
        return TF.pil_modes_mapping[interpolation]
    return interpolation


def _resize(t, img, mask):
    img = t(img)
    if mask is not None:
        mask = mask.resize(img.size, _pil_resample(t.interpolation))
    return img, mask


def _hflip(t, img, mask):
    if torch.rand(1) < t.p:  # the draw torchvision's RandomHorizontalFlip makes
        return TF.hflip(img), None if mask is None else TF.hflip(mask)
    return img, mask


def _vflip(t, img, mask):
    if torch.rand(1) < t.p:  # the draw torchvision's RandomVerticalFlip makes
        return TF.vflip(img), None if mask is None else TF.vflip(mask)
    return img, mask


def _random_2d_translation(t, img, mask):
    """torchreid's ``Random2DTranslation`` (enlarge 1.125x, random crop, with prob ``p``), with
    its draws in its order: ``random.uniform`` coin, then x offset, then y offset."""
    resample = t.interpolation
    if random.uniform(0, 1) > t.p:
        size = (t.width, t.height)
        return img.resize(size, resample), None if mask is None else mask.resize(size, resample)
    new_w, new_h = int(round(t.width * 1.125)), int(round(t.height * 1.125))
    img = img.resize((new_w, new_h), resample)
    x1 = int(round(random.uniform(0, new_w - t.width)))
    y1 = int(round(random.uniform(0, new_h - t.height)))
    box = (x1, y1, x1 + t.width, y1 + t.height)
    img = img.crop(box)
    if mask is not None:
        mask = mask.resize((new_w, new_h), resample).crop(box)
    return img, mask


def _mask_pad(mask, padding, padding_mode):
    """Pad the mask like the image: 0 outside in constant mode, else the image's mode."""
    if mask is None:
        return None
    return TF.pad(mask, padding, fill=0, padding_mode=padding_mode)


def _pad(t, img, mask):
    return t(img), _mask_pad(mask, t.padding, t.padding_mode)


def _center_crop(t, img, mask):
    return t(img), None if mask is None else TF.center_crop(mask, t.size)  # pads with 0 too


def _random_crop(t, img, mask):
    """torchvision's ``RandomCrop.forward`` step by step (pads, then ``get_params``)."""
    if t.padding is not None:
        img = TF.pad(img, t.padding, t.fill, t.padding_mode)
        mask = _mask_pad(mask, t.padding, t.padding_mode)
    _, height, width = TF.get_dimensions(img)
    if t.pad_if_needed and width < t.size[1]:
        padding = [t.size[1] - width, 0]
        img = TF.pad(img, padding, t.fill, t.padding_mode)
        mask = _mask_pad(mask, padding, t.padding_mode)
    if t.pad_if_needed and height < t.size[0]:
        padding = [0, t.size[0] - height]
        img = TF.pad(img, padding, t.fill, t.padding_mode)
        mask = _mask_pad(mask, padding, t.padding_mode)
    i, j, h, w = t.get_params(img, t.size)  # torch.randint draws (none if the size matches)
    return TF.crop(img, i, j, h, w), None if mask is None else TF.crop(mask, i, j, h, w)


_JOINT_OPS: Dict[type, JointOp] = {
    T.Resize: _resize,
    T.RandomHorizontalFlip: _hflip,
    T.RandomVerticalFlip: _vflip,
    T.RandomCrop: _random_crop,
    T.CenterCrop: _center_crop,
    T.Pad: _pad,
    compat.transforms.Random2DTranslation: _random_2d_translation,
}
_PHOTOMETRIC = {
    T.ToTensor, T.PILToTensor, T.ConvertImageDtype, T.Normalize, T.ColorJitter, T.Grayscale,
    T.RandomGrayscale, T.GaussianBlur, T.RandomErasing, T.RandomInvert, T.RandomPosterize,
    T.RandomSolarize, T.RandomAdjustSharpness, T.RandomAutocontrast, T.RandomEqualize,
    compat.transforms.RandomErasing, compat.transforms.RandomPatch,
    compat.transforms.ColorAugmentation,
}


def register_joint_op(cls: type, fn: JointOp) -> None:
    """Teach :class:`JointTransform` a geometric transform class.

    Args:
        cls (type): the transform class (matched exactly, subclasses need their own entry).
        fn (callable): ``fn(t, img, mask) -> (img, mask)``; ``mask`` is a PIL image of mode
            ``'F'`` of the same size as ``img`` or None. It must give the image exactly what
            ``t(img)`` gives, drawing random numbers the same way and in the same order.

    Examples::

        >>> def joint_rotate(t, img, mask):
        ...     angle = float(t.get_params(t.degrees))
        ...     return (TF.rotate(img, angle, t.interpolation, t.expand, t.center, t.fill),
        ...             None if mask is None else TF.rotate(mask, angle, t.interpolation,
        ...                                                 t.expand, t.center, 0))
        >>> register_joint_op(T.RandomRotation, joint_rotate)
    """
    if not isinstance(cls, type) or not callable(fn):
        raise TypeError("register_joint_op(cls, fn): cls must be a class and fn a callable")
    _PHOTOMETRIC.discard(cls)
    _JOINT_OPS[cls] = fn


def register_photometric(cls: type) -> None:
    """Declare a transform class that does not move pixels: it runs on the image only and the
    mask is left as it is.

    Examples::

        >>> register_photometric(MyBlur)
    """
    if not isinstance(cls, type):
        raise TypeError("register_photometric(cls): cls must be a class")
    _JOINT_OPS.pop(cls, None)
    _PHOTOMETRIC.add(cls)


# --------------------------------------------------------------------------- the transform
def _apply_all(steps, img, mask):
    for step in steps:
        img, mask = step(img, mask)
    return img, mask


def _resolve(t) -> List[Callable]:
    """Steps ``step(img, mask) -> (img, mask)`` for transform ``t`` (nested Compose flattened)."""
    if hasattr(t, "apply_joint"):  # a joint op written for this module
        return [t.apply_joint]
    cls = type(t)
    if cls is T.Compose:
        return [s for inner in t.transforms for s in _resolve(inner)]
    if cls is T.RandomApply:
        inner = [s for x in t.transforms for s in _resolve(x)]

        def random_apply(img, mask, t=t, inner=inner):
            if t.p < torch.rand(1):  # the draw torchvision's RandomApply makes
                return img, mask
            return _apply_all(inner, img, mask)
        return [random_apply]
    fn = _JOINT_OPS.get(cls)
    if fn is not None:
        return [lambda img, mask, t=t, fn=fn: fn(t, img, mask)]
    if cls in _PHOTOMETRIC:
        return [lambda img, mask, t=t: (t(img), mask)]
    name = cls.__name__
    raise TypeError(
        f"{cls.__module__}.{name} is not known to mpn_plugin.data.joint_transforms."
        f"JointTransform, so the person prior could not follow it. If it moves pixels, register "
        f"a joint version with register_joint_op({name}, fn) where fn(t, img, mask) -> "
        f"(img, mask) draws the same random numbers as {name}; if it does not move pixels, "
        f"call register_photometric({name}).")


def _mask_to_pil(mask, img) -> Image.Image:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2:
        raise TypeError(f"JointTransform: the person mask must be a 2-D numpy array (H, W), got "
                        f"{type(mask).__name__} {getattr(mask, 'shape', '')}")
    if not isinstance(img, Image.Image):
        raise TypeError(f"JointTransform: with a mask the input image must be a PIL image (as "
                        f"torchreid's read_image gives), got {type(img).__name__}")
    if mask.shape != (img.height, img.width):
        raise ValueError(f"JointTransform: mask shape {mask.shape} != image (height, width) "
                         f"{(img.height, img.width)}; resize the mask to the image first")
    if mask.dtype == np.uint8 and mask.max() > 1:
        raise ValueError("JointTransform: uint8 mask with values > 1; pass a bool mask or a "
                         "float mask in [0, 1] (e.g. mask / 255.0)")
    return Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32))


def _spatial_size(img) -> Tuple[int, int]:
    """(height, width) of a PIL image or a (..., H, W) tensor / array."""
    if isinstance(img, Image.Image):
        return img.height, img.width
    return tuple(img.shape[-2:])


class JointTransform:
    """Apply a torchvision/torchreid transform pipeline to an image and its person mask together.

    Paper Sec. 3.2 (coarse priors) and Sec. 5.1 (online augmentation): the prior of an augmented
    image is the equally augmented mask. With the same RNG state (python ``random`` and torch)
    the image output is identical to ``compose(img)``.

    Args:
        transforms (list): transform objects (torchvision / torchreid instances, nested
            ``Compose`` / ``RandomApply``, classes registered with :func:`register_joint_op` or
            :func:`register_photometric`) or joint ops, i.e. objects with a method
            ``apply_joint(img, mask) -> (img, mask)`` (``mask`` a PIL ``'F'`` image or None).
            Unknown classes raise ``TypeError`` here, not at the first sample.

    Examples::

        >>> tr, _ = compat.transforms.build_transforms(256, 128, transforms=['random_flip'])
        >>> joint = JointTransform.from_compose(tr)
        >>> img_t, mask = joint(pil_img, mask)  # (3, 256, 128) tensor, (256, 128) float32
    """

    def __init__(self, transforms: Sequence[object]):
        self.transforms = list(transforms)
        self._steps = [s for t in self.transforms for s in _resolve(t)]

    @classmethod
    def from_compose(cls, compose) -> "JointTransform":
        """Wrap a ``Compose`` (e.g. ``ImageDataManager.transform_tr``) or a single transform."""
        if isinstance(compose, JointTransform):
            return cls(compose.transforms)
        return cls(list(getattr(compose, "transforms", [compose])))

    def output_size(self) -> Tuple[int, int]:
        """(height, width) of the output image: the size of the last resizing/cropping op."""
        size = None
        for t in _flatten(self.transforms):
            if isinstance(t, (T.Resize, T.RandomCrop, T.CenterCrop)):
                s = [t.size] if isinstance(t.size, numbers.Number) else list(t.size)
                if isinstance(t, T.Resize) and len(s) == 1:
                    raise ValueError(f"{t!r} resizes the shorter side only: the output size "
                                     f"depends on the input image; use Resize((h, w))")
                size = (int(s[0]), int(s[-1]))
            elif isinstance(t, compat.transforms.Random2DTranslation):
                size = (int(t.height), int(t.width))
            elif isinstance(t, T.Pad) or (isinstance(t, T.RandomApply) and any(
                    type(x) not in _PHOTOMETRIC for x in _flatten(t.transforms))):
                raise ValueError(f"{type(t).__name__} in the pipeline: the output size cannot "
                                 f"be read from the transforms; end it with a Resize or a crop")
        if size is None:
            raise ValueError("the transform has no Resize/crop: cannot tell the output size")
        return size

    def __call__(self, img, mask: Mask = None):
        """Args:
            img (PIL.Image): the input image.
            mask (np.ndarray or None): (H0, W0) person mask of ``img``, float in [0, 1] or bool.

        Returns:
            (img_out, mask_out): ``img_out`` what the wrapped pipeline gives (a tensor for
            torchreid's pipelines), ``mask_out`` float32 (h, w) at the output image size or None.
        """
        if mask is None:
            return _apply_all(self._steps, img, None)[0], None
        img, mask_pil = _apply_all(self._steps, img, _mask_to_pil(mask, img))
        mask_out = np.array(mask_pil, dtype=np.float32)  # (h, w), a fresh writable array
        if mask_out.shape != _spatial_size(img):
            raise RuntimeError(f"JointTransform: mask {mask_out.shape} and image "
                               f"{_spatial_size(img)} sizes diverged; a registered joint op "
                               f"does not move the mask like the image")
        return img, mask_out

    def __repr__(self):
        return "JointTransform(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


def _flatten(transforms):
    for t in transforms:
        if type(t) is T.Compose:
            yield from _flatten(t.transforms)
        else:
            yield t


# --------------------------------------------------------------------------- offline translation
def translate_pair(img: Image.Image, mask: Mask, dx: int, dy: int,
                   fill: Union[str, int, Sequence[int]] = "edge") -> Tuple[Image.Image, Mask]:
    """Shift an image and its person mask by whole pixels: the offline translation of Sec. 5.1
    ([53], training set enlarged 5x by shifted copies; offsets from
    :func:`offline_translation_shifts`).

    Pixel (y, x) of the output is pixel (y - dy, x - dx) of the input (``dx > 0`` moves the
    content right, ``dy > 0`` down). The uncovered image border is filled by ``fill``; the mask
    border is always 0 (no person there).

    Args:
        img (PIL.Image): image (any mode numpy can hold, e.g. ``'RGB'``, ``'L'``).
        mask (np.ndarray or None): (H, W) person mask (float or bool), or None.
        dx (int): horizontal shift in pixels.
        dy (int): vertical shift in pixels.
        fill (str, int or tuple): ``'edge'`` (default) replicates the nearest border pixel,
            which keeps the background texture and adds no constant band that the network
            could learn as a cue (but replicates a person that touches the border, e.g. feet,
            where the mask says 0); ``'mean'`` fills with the image's mean colour, which keeps
            the mask exactly consistent with the image at the border; a number or a per-channel
            tuple fills with that constant.

    Returns:
        (PIL.Image, np.ndarray or None): same size and mode as the input; mask float32.

    Examples::

        >>> im2, m2 = translate_pair(img, mask, dx=5, dy=-7)          # edge-replicated border
        >>> im3, m3 = translate_pair(img, mask, 5, -7, fill=(124, 116, 104))
    """
    if int(dx) != dx or int(dy) != dy:
        raise ValueError(f"translate_pair: dx, dy must be whole pixels, got ({dx}, {dy}); "
                         f"round them first")
    dx, dy = int(dx), int(dy)
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    if mask is not None and mask.shape != (h, w):
        raise ValueError(f"translate_pair: mask shape {mask.shape} != image (height, width) "
                         f"{(h, w)}")
    # overlap of source and destination: dst[y0d:y1d, x0d:x1d] = src[y0d-dy:y1d-dy, x0d-dx:x1d-dx]
    y0d, y1d = min(max(dy, 0), h), max(min(h + dy, h), 0)
    x0d, x1d = min(max(dx, 0), w), max(min(w + dx, w), 0)
    overlap = y0d < y1d and x0d < x1d
    if isinstance(fill, str) and fill == "edge":
        if overlap:  # the overlap, its border pixels replicated outwards (cv2: ~20 us)
            out = cv2.copyMakeBorder(arr[y0d - dy:y1d - dy, x0d - dx:x1d - dx], y0d, h - y1d,
                                     x0d, w - x1d, cv2.BORDER_REPLICATE)
        else:  # shifted out entirely: every pixel is its nearest source pixel
            ys, xs = np.clip(np.arange(h) - dy, 0, h - 1), np.clip(np.arange(w) - dx, 0, w - 1)
            out = arr.take(ys, 0).take(xs, 1)
    else:
        if isinstance(fill, str):
            if fill != "mean":
                raise ValueError(f"translate_pair: fill must be 'edge', 'mean', a number or a "
                                 f"per-channel tuple, got {fill!r}")
            channels = 1 if arr.ndim == 2 else arr.shape[2]
            value = np.round(cv2.mean(arr)[:channels])
        else:
            value = np.asarray(fill, dtype=np.float64).reshape(-1)
        value = value.astype(arr.dtype)
        out = np.empty_like(arr)
        out[...] = value if arr.ndim == 3 else value[0]
        if overlap:
            out[y0d:y1d, x0d:x1d] = arr[y0d - dy:y1d - dy, x0d - dx:x1d - dx]
    out_img = Image.fromarray(out)  # same mode: RGB / L inferred from (H, W, 3) / (H, W) uint8
    if mask is None:
        return out_img, None
    out_mask = np.zeros((h, w), np.float32)
    if overlap:
        out_mask[y0d:y1d, x0d:x1d] = mask[y0d - dy:y1d - dy, x0d - dx:x1d - dx]
    return out_img, out_mask


def offline_translation_shifts(relpaths, n_copies: int,
                               max_shift: Tuple[float, float] = (0.1, 0.1),
                               seed: int = 0) -> np.ndarray:
    """Per-image shifts of the offline-translated copies of a training set (Sec. 5.1, [53]:
    training set enlarged 5x by translated images): every image of every copy gets its own
    (dy, dx).

    Args:
        relpaths (list of str): the training images (relative paths: the draw follows their
            sorted order, so it does not depend on the order of the list or on the dataset's
            location).
        n_copies (int): number of copies including the original (paper: 5).
        max_shift (tuple): (dy_max, dx_max), the largest |shift| as fractions of the image
            (height, width).
        seed (int): the shifts depend only on (sorted relpaths, n_copies, max_shift, seed).

    Returns:
        np.ndarray: (n_copies * N, 2) float64 ``(dy, dx)`` fractions of (height, width); row
        ``c * N + i`` is copy c of image ``relpaths[i]``. Copy 0 is the original (0, 0); the
        others are uniform in ``[-max, max]``. Multiply by the image height/width and round to
        get pixels for :func:`translate_pair`.

    Examples::

        >>> s = offline_translation_shifts(['b.jpg', 'a.jpg'], 3, (0.1, 0.2), seed=0)
        >>> s.shape, s[:2].tolist()
        ((6, 2), [[0.0, 0.0], [0.0, 0.0]])
    """
    if int(n_copies) != n_copies or n_copies < 1:
        raise ValueError(f"offline translation: n_copies must be an integer >= 1, got {n_copies}")
    if len(max_shift) != 2 or min(max_shift) < 0:
        raise ValueError(f"offline translation: max_shift must be (dy_max, dx_max) >= 0, got "
                         f"{max_shift}")
    n = len(relpaths)
    rng = np.random.default_rng([seed, 53])
    limit = np.asarray(max_shift, dtype=np.float64)
    drawn = rng.uniform(-limit, limit, size=(int(n_copies) - 1, n, 2))  # in sorted-path order
    shifts = np.zeros((int(n_copies), n, 2))
    shifts[1:, np.argsort(np.asarray(relpaths, dtype=object), kind="stable")] = drawn
    return shifts.reshape(-1, 2)
