"""Prior-aware torchreid datasets (Sec. 3.2 priors delivered through torchreid's pipeline).

Items stay torchreid 4-tuples ``(path, pid, camid, dsetid)``, so every torchreid sampler works
unchanged. In train mode, ``__getitem__`` adds the coarse prior of the image the network
actually sees:

1. the stage-1 person mask (image resolution) is read from the prior cache;
2. the paper's offline translation copy (Sec. 5.1, [53]; one shift per image and copy,
   :func:`offline_translation_shifts`) and torchreid's online geometric transforms (resize,
   ``random_flip``, ``random_crop``) are applied to image and mask together
   (:mod:`mpn_plugin.data.joint_transforms`), at image resolution;
3. stage 2 of the pipeline (resize to the feature-map size, binarise, dilate, boundaries) gives
   ``prior_mask`` (Hf, Wf) and ``prior_roi`` (top, bottom); ``random_erase`` and colour jitter
   leave the prior as is.

Registered names: ``market1501_prior``, ``dukemtmcreid_prior``, ``cuhk03_prior``,
``msmt17_prior`` and the synthetic dataset ``synthetic_pedestrians``.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from .. import compat
from .joint_transforms import offline_translation_shifts

FEATURE_STRIDE = 16  # ResNet / MobileNetV2 with last stride 1 and OSNet: F is (H/16, W/16)


@dataclass
class PriorOptions:
    """How prior-aware datasets find and apply priors (set from ``cfg.mpn.prior``).

    Attributes:
        enabled (bool): add prior fields to train items (off for models that use none).
        cache_file (str): the prior cache; "" = the only ``priors_*.npz`` in the dataset folder.
        on_missing (str): ``error`` (default) or ``uniform`` (fallback prior + counted warning)
            for an image that has no prior in the cache.
        feature_stride (int): input size / feature-map size of the backbone.
        binarize_threshold (float): stage-2 binarisation threshold.
        offline_translation_copies (int): training set enlarged this many times by shifted
            copies (paper: 5); 1 = off.
        offline_translation_max_shift (tuple): max |shift| as fractions of (height, width).
        seed (int): seed of the offline translation shifts (one per image and copy).
    """
    enabled: bool = True
    cache_file: str = ""
    on_missing: str = "error"
    feature_stride: int = FEATURE_STRIDE
    binarize_threshold: float = 0.5
    offline_translation_copies: int = 1
    offline_translation_max_shift: Tuple[float, float] = (0.1, 0.1)
    seed: int = 0

    def __post_init__(self):
        if self.on_missing not in ("error", "uniform"):
            raise ValueError(f"mpn.prior.on_missing must be 'error' or 'uniform', got "
                             f"'{self.on_missing}'")
        if self.offline_translation_copies < 1:
            raise ValueError("mpn.prior.offline_translation_copies must be >= 1")

    @classmethod
    def from_cfg(cls, cfg, enabled: bool, feature_stride: int = FEATURE_STRIDE) -> "PriorOptions":
        p = cfg.mpn.prior
        return cls(enabled=enabled, cache_file=p.cache_file, on_missing=p.on_missing,
                   feature_stride=feature_stride,
                   binarize_threshold=p.binarize_threshold,
                   offline_translation_copies=p.offline_translation_copies,
                   offline_translation_max_shift=tuple(p.offline_translation_max_shift),
                   seed=cfg.train.seed)


def missing_dataset_message(name: str, path: str) -> str:
    return (f"dataset '{name}' not found: the folder '{path}' does not exist. Put the dataset "
            f"there (data.root is its parent), or change data.root / --root. For the synthetic "
            f"dataset run: python tools/make_synthetic_dataset.py --root {osp.dirname(path)}")


class PriorAwareMixin:
    """Adds coarse-prior fields to train items of a torchreid ``ImageDataset`` subclass."""

    prior_options: PriorOptions = PriorOptions()

    def _init_priors(self):
        opts = self.prior_options
        self._cache = None
        self._joint = None
        self._feature_size = None
        self._missing_count = 0
        self._shifts = None  # (len(data), 2) (dy, dx) per item; None = no translation
        if self.mode == "train" and opts.offline_translation_copies > 1:
            self._shifts = offline_translation_shifts(
                [osp.relpath(p, self.image_root) for p, *_ in self.train],
                opts.offline_translation_copies, tuple(opts.offline_translation_max_shift),
                seed=opts.seed)
            # Enlarge the training set: copy c of image i is entry c * n + i.
            self.train = [item for _ in range(opts.offline_translation_copies)
                          for item in self.train]
            self.data = self.train

    # ----------------------------------------------------------------------- cache
    @property
    def prior_root(self) -> str:
        """Where the prior cache files live."""
        return self.dataset_dir

    @property
    def image_root(self) -> str:
        """The folder the cache's image paths are relative to (the dataset folder; a manifest
        dataset sets the common folder of its images)."""
        return getattr(self, "_image_root", None) or self.prior_root

    def generate_priors_hint(self, feature_size: Optional[Tuple[int, int]] = None,
                             overwrite: bool = False, setup: bool = True) -> str:
        """The ``tools/generate_priors.py`` command (for this registered dataset, its data root
        and ``feature_size``) that writes the cache training looks for, as it must be typed;
        ``setup`` adds what to install first, if anything."""
        from ..priors.commands import generate_priors_command, default_adapter, setup_hint
        registry = vars(compat.data.datasets).get("__image_datasets", {})
        name = next((n for n, c in registry.items() if c is type(self)), None) or next(
            (n for n, c in registry.items() if isinstance(self, c) and n.endswith("_prior")), "<name>")
        stride = self.prior_options.feature_stride
        h, w = (feature_size[0] * stride, feature_size[1] * stride) if feature_size else (None, None)
        root = getattr(self, "root", None) or osp.dirname(self.prior_root)
        cache_file = self.prior_options.cache_file  # training reads that file: write it there
        extra = ["--out", osp.abspath(cache_file)] if cache_file else []
        return (generate_priors_command(name, root, h, w, overwrite=overwrite, extra=extra)
                + (setup_hint(default_adapter(name)) if setup else ""))

    def _cache_path(self) -> str:
        """``mpn.prior.cache_file``, or the one ``priors_<tool>_<Hf>x<Wf>.npz`` of the dataset
        folder made for the training feature size."""
        opts = self.prior_options
        if opts.cache_file:
            return opts.cache_file
        Hf, Wf = self._feature_size or ("*", "*")
        found = sorted(glob.glob(osp.join(self.prior_root, f"priors_*_{Hf}x{Wf}.npz")))
        if len(found) != 1:
            others = sorted(osp.basename(f) for f in glob.glob(osp.join(self.prior_root, "priors_*.npz")))
            raise FileNotFoundError(
                f"{'no' if not found else 'several'} prior cache files for feature size "
                f"{Hf}x{Wf} in '{self.prior_root}' (found: {others or 'none'}). Generate one: "
                f"{self.generate_priors_hint(self._feature_size)}; "
                f"or set mpn.prior.cache_file, or mpn.prior_variant=uniform to train without priors.")
        return found[0]

    def prior_cache(self, feature_size: Optional[Tuple[int, int]] = None):
        """The prior cache, validated once: made for this feature size (else
        ``StalePriorCacheError``), holding every training image (else ``KeyError``, unless
        ``on_missing='uniform'``) and made for these very image files (sizes and content
        digests, else ``StalePriorCacheError`` naming the images that differ)."""
        if self._cache is None:
            from ..priors.cache import PriorCache
            path = self._cache_path()
            # one command in every error: the one for this dataset, data root and feature size
            # (the cache's own header repeats the settings it was made with)
            cache = PriorCache.load(path, expected_feature_size=feature_size,
                                    regenerate=self.generate_priors_hint(feature_size, True))
            rels = {osp.relpath(p, self.image_root) for p, *_ in self.data}
            missing = sorted(r for r in rels if r not in cache)
            if missing and self.prior_options.on_missing == "error":
                raise KeyError(
                    f"{len(missing)} of {len(rels)} training images have no prior in "
                    f"'{self._cache_path()}' (e.g. '{missing[0]}'): it was made for other "
                    f"images. Regenerate it: {self.generate_priors_hint(feature_size, True)}; or set "
                    f"mpn.prior.on_missing=uniform to use the fallback prior for them.")
            cache.check_images(self.image_root, rels,
                               regenerate=self.generate_priors_hint(feature_size, setup=False))
            self._cache = cache
        return self._cache

    def stage1_mask(self, img_path: str) -> Optional[np.ndarray]:
        """The cached image-resolution person mask of ``img_path`` (None = fallback prior)."""
        rel = osp.relpath(img_path, self.image_root)
        cache = self.prior_cache(self._feature_size)
        if rel not in cache:
            if self.prior_options.on_missing == "error":
                raise KeyError(
                    f"no coarse prior for image '{img_path}' in cache '{self._cache_path()}'. "
                    f"Regenerate it: {self.generate_priors_hint(self._feature_size, True)}; or set "
                    f"mpn.prior.on_missing=uniform to use the fallback prior.")
            self._missing_count += 1
            if self._missing_count in (1, 10, 100) or self._missing_count % 1000 == 0:
                warnings.warn(f"{self._missing_count} image(s) without a prior so far (e.g. "
                              f"'{img_path}'): using the fallback prior (uniform division)")
            return None
        return cache.get(rel).mask_image

    # ----------------------------------------------------------------------- items
    def transformed_pair(self, index: int):
        """(image tensor, mask at image resolution or None) of train item ``index``: the
        offline translation copy, then the joint online transforms."""
        from .joint_transforms import JointTransform, translate_pair

        if self._joint is None:
            self._joint = JointTransform.from_compose(self.transform)
            h, w = self._joint.output_size()
            stride = self.prior_options.feature_stride
            self._feature_size = (h // stride, w // stride)
        img_path = self.data[index][0]
        img = compat.read_image(img_path)  # raises on an unreadable file (no endless retry)
        mask = self.stage1_mask(img_path)
        if mask is not None and mask.shape != (img.height, img.width):
            import cv2
            mask = cv2.resize(mask.astype(np.float32), (img.width, img.height),
                              interpolation=cv2.INTER_LINEAR)
        dy, dx = self.translation_of(index)
        if dx or dy:
            img, mask = translate_pair(img, mask, int(round(dx * img.width)),
                                       int(round(dy * img.height)))
        return self._joint(img, mask)

    def translation_of(self, index: int):
        """(dy, dx) offline translation (fractions of the height/width) of train item ``index``
        (drawn per image and per copy)."""
        if self._shifts is None:
            return 0.0, 0.0
        dy, dx = self._shifts[index]
        return float(dy), float(dx)

    def __getitem__(self, index):
        if self.mode != "train" or not self.prior_options.enabled or self.transform is None:
            return compat.image_dataset_item(self, index)  # torchreid's item, failing fast
        if self.k_tfm != 1:
            raise ValueError("prior-aware datasets support data.k_tfm=1 only")
        from ..priors.pipeline import PriorConfig, coarse_prior_from_mask

        img_path, pid, camid, dsetid = self.data[index]
        img_t, mask_t = self.transformed_pair(index)
        prior = coarse_prior_from_mask(
            mask_t, self._feature_size,
            PriorConfig(binarize_threshold=self.prior_options.binarize_threshold))
        return {
            "img": img_t, "pid": pid, "camid": camid, "impath": img_path, "dsetid": dsetid,
            "prior_mask": torch.from_numpy(np.ascontiguousarray(prior.mask, dtype=np.float32)),
            "prior_roi": torch.tensor([prior.top, prior.bottom], dtype=torch.float32),
            "prior_fallback": prior.case == "fallback",
        }

    def __add__(self, other):
        """Multi-source training keeps the priors (torchreid's ``__add__`` returns a plain
        ImageDataset): each image keeps the cache of the dataset it came from."""
        combined = super().__add__(other)
        return CombinedPriorDataset.from_sources(combined, [self, other])


class CombinedPriorDataset(PriorAwareMixin, compat.ImageDataset):
    """The sum of several prior-aware datasets (multi-source training)."""

    @classmethod
    def from_sources(cls, combined, sources):
        obj = cls.__new__(cls)
        obj.__dict__.update(combined.__dict__)
        obj._sources = [s for src in sources for s in getattr(src, "_sources", [src])]
        obj.prior_options = sources[0].prior_options
        obj._cache, obj._joint, obj._missing_count, obj._feature_size = None, None, 0, None
        # torchreid's __add__ concatenates the train lists in order: so do the shifts
        shifts = [getattr(s, "_shifts", None) for s in sources]
        obj._shifts = (None if all(x is None for x in shifts) else np.concatenate(
            [np.zeros((len(s.train), 2)) if x is None else x for s, x in zip(sources, shifts)]))
        return obj

    def stage1_mask(self, img_path):
        for src in self._sources:
            if img_path in src.__dict__.setdefault("_own_paths", {p for p, *_ in src.data}):
                src._feature_size = self._feature_size  # the size the combined set trains at
                return src.stage1_mask(img_path)
        raise KeyError(f"image '{img_path}' belongs to none of the combined datasets")


def _split_counts(path: str) -> str:
    counts = {d: len(glob.glob(osp.join(path, d, "*.jpg"))) for d in sorted(os.listdir(path))
              if osp.isdir(osp.join(path, d))}
    return "image counts per folder " + ", ".join(f"{d}: {n}" for d, n in counts.items())


def prior_aware(base, name: str, dataset_dir: Optional[str] = None):
    """Make a prior-aware subclass of the torchreid dataset class ``base``."""
    attrs = {"__doc__": f"{base.__name__} with coarse priors (registered as '{name}')",
             "dataset_url": None}
    if dataset_dir is not None:
        attrs["dataset_dir"] = dataset_dir

    def __init__(self, root="", **kwargs):
        path = osp.join(osp.abspath(osp.expanduser(root)), type(self).dataset_dir)
        if not osp.isdir(path):
            raise FileNotFoundError(missing_dataset_message(name, path))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The current data structure is deprecated")
            try:
                base.__init__(self, root=root, **kwargs)
            except (IndexError, ValueError, ZeroDivisionError) as exc:
                raise ValueError(f"dataset '{name}' in '{path}' could not be read ({exc}): "
                                 f"{_split_counts(path)}; an empty split (no images) is the "
                                 f"usual cause") from exc
        for split in ("train", "query", "gallery"):
            if not getattr(self, split):
                raise ValueError(f"dataset '{name}' in '{path}' has an empty {split} split: "
                                 f"{_split_counts(path)}")
        self._init_priors()

    attrs["__init__"] = __init__
    return type(base.__name__ + "Prior", (PriorAwareMixin, base), attrs)


def _base_classes():
    image = "data.datasets.image."
    return {
        "market1501_prior": (compat.submodule(image + "market1501").Market1501, None),
        "dukemtmcreid_prior": (compat.submodule(image + "dukemtmcreid").DukeMTMCreID, None),
        "cuhk03_prior": (compat.submodule(image + "cuhk03").CUHK03, None),
        "msmt17_prior": (compat.submodule(image + "msmt17").MSMT17, None),
        "synthetic_pedestrians": (compat.submodule(image + "market1501").Market1501,
                                  "synthetic_pedestrians"),
    }


PRIOR_DATASETS = tuple(_base_classes())


def register_prior_datasets(options: Optional[PriorOptions] = None) -> None:
    """Register (or re-register with new ``options``) every prior-aware dataset."""
    for name, (base, dataset_dir) in _base_classes().items():
        cls = prior_aware(base, name, dataset_dir)
        if options is not None:
            cls.prior_options = dataclasses.replace(options)
        compat.register_image_dataset(name, cls, overwrite=True)
    from .manifest import register_manifest_datasets
    from .occluded_datasets import register_occluded_datasets
    register_manifest_datasets(options)
    register_occluded_datasets(options)
