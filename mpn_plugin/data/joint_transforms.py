"""Joint augmentation: the coarse prior follows every geometric transform of the image.

:class:`JointTransform` wraps the train ``Compose`` that torchreid's ``build_transforms`` makes.
Geometric ops (``Resize``, ``RandomHorizontalFlip``, torchreid's ``Random2DTranslation``) draw
their random numbers exactly as the originals do (same generator, same order), so with the same
RNG state the image is identical to what torchreid alone would produce, and the same decision
is applied to the person mask, kept at image resolution as float (sub-cell shifts survive).
Photometric ops (colour jitter, ``RandomPatch``, ``ToTensor``, ``Normalize``,
``RandomErasing``...) run unchanged on the image and leave the mask as is.

Examples::

    >>> joint = JointTransform.from_compose(datamanager.transform_tr)
    >>> img_t, mask = joint(pil_image, person_mask)   # mask: (h, w) float32 at output size
"""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from .. import compat

Mask = Optional[np.ndarray]
JointOp = Callable[[object, Image.Image, Mask], Tuple[Image.Image, Mask]]


def _resize_mask(mask: Mask, size_wh: Tuple[int, int], resample=Image.BILINEAR) -> Mask:
    """Resize the float mask with PIL's own resampling (as the image is resized)."""
    if mask is None:
        return None
    out = Image.fromarray(mask.astype(np.float32), mode="F").resize(size_wh, resample)
    return np.asarray(out, dtype=np.float32)


def _pil_resample(interpolation):
    if isinstance(interpolation, T.InterpolationMode):
        return TF.pil_modes_mapping[interpolation]
    return interpolation


def _resize(t, img, mask):
    img = t(img)
    return img, _resize_mask(mask, img.size, _pil_resample(t.interpolation))


def _hflip(t, img, mask):
    if torch.rand(1) < t.p:  # the draw torchvision's RandomHorizontalFlip makes
        return TF.hflip(img), None if mask is None else np.ascontiguousarray(mask[:, ::-1])
    return img, mask


def _random_2d_translation(t, img, mask):
    """torchreid's Random2DTranslation, same draws: enlarge 1.125x then crop, with prob p."""
    if random.uniform(0, 1) > t.p:
        return (img.resize((t.width, t.height), t.interpolation),
                _resize_mask(mask, (t.width, t.height), t.interpolation))
    new_w, new_h = int(round(t.width * 1.125)), int(round(t.height * 1.125))
    img = img.resize((new_w, new_h), t.interpolation)
    x1 = int(round(random.uniform(0, new_w - t.width)))
    y1 = int(round(random.uniform(0, new_h - t.height)))
    img = img.crop((x1, y1, x1 + t.width, y1 + t.height))
    if mask is not None:
        mask = _resize_mask(mask, (new_w, new_h), t.interpolation)[y1:y1 + t.height, x1:x1 + t.width]
    return img, mask


_JOINT_OPS: Dict[type, JointOp] = {
    T.Resize: _resize,
    T.RandomHorizontalFlip: _hflip,
    compat.transforms.Random2DTranslation: _random_2d_translation,
}
_PHOTOMETRIC = {T.ToTensor, T.Normalize, T.ColorJitter, T.Grayscale, T.RandomGrayscale,
                compat.transforms.RandomErasing, compat.transforms.RandomPatch,
                compat.transforms.ColorAugmentation}


def register_joint_op(cls: type, fn: JointOp) -> None:
    """Teach :class:`JointTransform` a geometric transform: ``fn(t, img, mask) -> (img, mask)``."""
    _JOINT_OPS[cls] = fn


def register_photometric(cls: type) -> None:
    """Declare a transform that does not move pixels (the mask is left as is)."""
    _PHOTOMETRIC.add(cls)


class JointTransform:
    """Apply a torchvision/torchreid ``Compose`` to an image and its person mask together."""

    def __init__(self, transforms: List[object]):
        for t in transforms:
            if type(t) not in _JOINT_OPS and type(t) not in _PHOTOMETRIC:
                raise TypeError(
                    f"{type(t).__name__} is not known to JointTransform, so the prior could not "
                    f"follow it. Register a joint version with "
                    f"mpn_plugin.data.joint_transforms.register_joint_op({type(t).__name__}, fn), "
                    f"or register_photometric({type(t).__name__}) if it does not move pixels.")
        self.transforms = list(transforms)

    @classmethod
    def from_compose(cls, compose) -> "JointTransform":
        return cls(list(getattr(compose, "transforms", [compose])))

    def output_size(self):
        """(height, width) of the output image: the last resizing/cropping op's size."""
        size = None
        for t in self.transforms:
            if isinstance(t, T.Resize):
                size = tuple(t.size) if not isinstance(t.size, int) else (t.size, t.size)
            elif isinstance(t, compat.transforms.Random2DTranslation):
                size = (t.height, t.width)
        if size is None:
            raise ValueError("the transform has no Resize: cannot tell the output size")
        return size

    def __call__(self, img: Image.Image, mask: Mask = None):
        for t in self.transforms:
            op = _JOINT_OPS.get(type(t))
            if op is not None:
                img, mask = op(t, img, mask)
            else:
                img = t(img)
        return img, mask


def translate_pair(img: Image.Image, mask: Mask, dx: int, dy: int) -> Tuple[Image.Image, Mask]:
    """Shift image and mask by (dx, dy) pixels: the paper's offline translation (Sec. 5.1,
    [53]). The image border is filled by replicating its edge, the mask with 0."""
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    out = cv2.warpAffine(arr, M, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    if mask is not None:
        mask = cv2.warpAffine(mask.astype(np.float32), M, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return Image.fromarray(out), mask


def offline_translation_offsets(n_copies: int = 5, max_shift: Tuple[float, float] = (0.1, 0.1),
                                seed: int = 0) -> List[Tuple[float, float]]:
    """(dy, dx) shifts as fractions of (height, width) for the enlarged training set: the first
    copy is the original (0, 0), the others uniform in ``[-max, max]``, deterministic by seed."""
    rng = np.random.default_rng([seed, 53])
    offsets = [(0.0, 0.0)]
    for _ in range(n_copies - 1):
        offsets.append((float(rng.uniform(-max_shift[0], max_shift[0])),
                        float(rng.uniform(-max_shift[1], max_shift[1]))))
    return offsets
