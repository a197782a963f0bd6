"""Coarse priors on torchreid train items (Sec. 3.2 priors delivered through torchreid's pipeline).

The bottom of the dataset modules: :class:`PriorOptions` and :class:`PriorAwareMixin`, which
:mod:`mpn_plugin.data.prior_datasets` puts in front of each dataset class it registers. Items
stay torchreid 4-tuples ``(path, pid, camid, dsetid)``, so every torchreid sampler works
unchanged. In train mode, ``__getitem__`` adds the coarse prior of the image the network
actually sees:

1. the stage-1 person mask (image resolution) is read from the prior cache
   (:class:`PriorCacheLookup`);
2. the paper's offline translation copy (Sec. 5.1, [53]; one shift per image and copy,
   :class:`OfflineTranslation`) and torchreid's online geometric transforms (resize,
   ``random_flip``, ``random_crop``) are applied to image and mask together
   (:mod:`mpn_plugin.data.joint_transforms`), at image resolution;
3. stage 2 of the pipeline (resize to the feature-map size, binarise, dilate, boundaries) gives
   ``prior_mask`` (Hf, Wf) and ``prior_roi`` (top, bottom); ``random_erase`` and colour jitter
   leave the prior as is.

Errors about the cache name the one ``tools/generate_priors.py`` command that makes the cache
training looks for (:class:`PriorHints`).
"""
from __future__ import annotations

import glob
import os.path as osp
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from .. import compat
from ..priors.cache import PriorCache
from ..priors.commands import default_adapter, generate_priors_command, setup_hint
from ..priors.pipeline import PriorConfig, coarse_prior_from_mask
from .joint_transforms import JointTransform, offline_translation_shifts, translate_pair

__all__ = ["PriorOptions", "PriorHints", "PriorCacheLookup", "OfflineTranslation",
           "PriorAwareMixin", "CombinedPriorDataset"]


@dataclass
class PriorOptions:
    """How prior-aware datasets find and apply priors (set from ``cfg.mpn.prior``).

    Attributes:
        feature_stride (int): input size / feature-map size of the backbone
            (``mpn_plugin.models.feature_stride(cfg)``); required.
        enabled (bool): add prior fields to train items (off for models that use none).
        cache_file (str): the prior cache; "" = the only ``priors_*.npz`` in the dataset folder.
        on_missing (str): ``error`` (default) or ``uniform`` (fallback prior + counted warning)
            for an image that has no prior in the cache.
        binarize_threshold (float): stage-2 binarisation threshold.
        offline_translation_copies (int): training set enlarged this many times by shifted
            copies (paper: 5); 1 = off.
        offline_translation_max_shift (tuple): max |shift| as fractions of (height, width).
        seed (int): seed of the offline translation shifts (one per image and copy).

    Examples::

        >>> opts = PriorOptions(feature_stride=16, offline_translation_copies=5)
        >>> register_prior_datasets(opts)     # mpn_plugin.data
    """
    feature_stride: int
    enabled: bool = True
    cache_file: str = ""
    on_missing: str = "error"
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
    def from_cfg(cls, cfg, enabled: bool, feature_stride: int) -> "PriorOptions":
        """The options of ``cfg.mpn.prior`` (seed: ``cfg.train.seed``).

        Args:
            cfg (CfgNode): the training config.
            enabled (bool): whether train items carry priors.
            feature_stride (int): the backbone's stride, ``mpn_plugin.models.feature_stride(cfg)``.

        Examples::

            >>> PriorOptions.from_cfg(cfg, enabled=True, feature_stride=16)
        """
        p = cfg.mpn.prior
        return cls(enabled=enabled, cache_file=p.cache_file, on_missing=p.on_missing,
                   feature_stride=feature_stride,
                   binarize_threshold=p.binarize_threshold,
                   offline_translation_copies=p.offline_translation_copies,
                   offline_translation_max_shift=tuple(p.offline_translation_max_shift),
                   seed=cfg.train.seed)


class PriorHints:
    """Error hints: the ``tools/generate_priors.py`` command for this dataset."""

    prior_options: Optional[PriorOptions] = None

    def registered_name(self) -> str:
        """The name this dataset's class is registered under with torchreid ("<name>" if none)."""
        registry = vars(compat.data.datasets).get("__image_datasets", {})
        return next((n for n, c in registry.items() if c is type(self)), None) or next(
            (n for n, c in registry.items() if isinstance(self, c) and n.endswith("_prior")),
            "<name>")

    def configured_options(self) -> PriorOptions:
        """The registered :class:`PriorOptions`.

        Raises:
            ValueError: the dataset was registered without options (as at import), naming the
                call that sets them.
        """
        if self.prior_options is None:
            raise ValueError(
                f"dataset '{self.registered_name()}' has no prior options (feature stride, "
                f"prior cache, ...): register them before building training data, as training "
                f"does: mpn_plugin.data.register_prior_datasets(PriorOptions.from_cfg(cfg, "
                f"enabled, mpn_plugin.models.feature_stride(cfg)))")
        return self.prior_options

    def generate_priors_hint(self, feature_size: Optional[Tuple[int, int]] = None,
                             overwrite: bool = False, setup: bool = True) -> str:
        """The ``tools/generate_priors.py`` command (for this registered dataset, its data root
        and ``feature_size``) that writes the cache training looks for, as it must be typed;
        ``setup`` adds what to install first, if anything."""
        name = self.registered_name()
        opts = self.configured_options()
        h, w = ((feature_size[0] * opts.feature_stride, feature_size[1] * opts.feature_stride)
                if feature_size else (None, None))
        root = getattr(self, "root", None) or osp.dirname(self.prior_root)
        # training reads mpn.prior.cache_file: write it there
        extra = ["--out", osp.abspath(opts.cache_file)] if opts.cache_file else []
        return (generate_priors_command(name, root, h, w, overwrite=overwrite, extra=extra)
                + (setup_hint(default_adapter(name)) if setup else ""))


class PriorCacheLookup(PriorHints):
    """Cache and lookup: the prior cache of the dataset, validated once, and each image's
    stage-1 person mask."""

    @property
    def prior_root(self) -> str:
        """Where the prior cache files live."""
        return self.dataset_dir

    @property
    def image_root(self) -> str:
        """The folder the cache's image paths are relative to (the dataset folder; a manifest
        dataset sets the common folder of its images)."""
        return getattr(self, "_image_root", None) or self.prior_root

    def _cache_path(self) -> str:
        """``mpn.prior.cache_file``, or the one ``priors_<tool>_<Hf>x<Wf>.npz`` of the dataset
        folder made for the training feature size."""
        opts = self.configured_options()
        if opts.cache_file:
            return opts.cache_file
        Hf, Wf = self._feature_size or ("*", "*")
        found = sorted(glob.glob(osp.join(self.prior_root, f"priors_*_{Hf}x{Wf}.npz")))
        if len(found) != 1:
            others = sorted(osp.basename(f)
                            for f in glob.glob(osp.join(self.prior_root, "priors_*.npz")))
            raise FileNotFoundError(
                f"{'no' if not found else 'several'} prior cache files for feature size "
                f"{Hf}x{Wf} in '{self.prior_root}' (found: {others or 'none'}). Generate one: "
                f"{self.generate_priors_hint(self._feature_size)}; or set "
                f"mpn.prior.cache_file, or mpn.prior_variant=uniform to train without priors.")
        return found[0]

    def prior_cache(self, feature_size: Optional[Tuple[int, int]] = None) -> PriorCache:
        """The prior cache, validated once: made for this feature size (else
        ``StalePriorCacheError``), holding every training image (else ``KeyError``, unless
        ``on_missing='uniform'``) and made for these very image files (sizes and content
        digests, else ``StalePriorCacheError`` naming the images that differ)."""
        if self._cache is None:
            path = self._cache_path()
            # one command in every error: the one for this dataset, data root and feature size
            # (the cache's own header repeats the settings it was made with)
            cache = PriorCache.load(path, expected_feature_size=feature_size,
                                    regenerate=self.generate_priors_hint(feature_size, True))
            rels = {osp.relpath(p, self.image_root) for p, *_ in self.data}
            missing = sorted(r for r in rels if r not in cache)
            if missing and self.configured_options().on_missing == "error":
                raise KeyError(
                    f"{len(missing)} of {len(rels)} training images have no prior in "
                    f"'{self._cache_path()}' (e.g. '{missing[0]}'): it was made for other "
                    f"images. Regenerate it: {self.generate_priors_hint(feature_size, True)}; "
                    f"or set mpn.prior.on_missing=uniform to use the fallback prior for them.")
            cache.check_images(self.image_root, rels,
                               regenerate=self.generate_priors_hint(feature_size, setup=False))
            self._cache = cache
        return self._cache

    def stage1_mask(self, img_path: str) -> Optional[np.ndarray]:
        """The cached image-resolution person mask of ``img_path`` (None = fallback prior)."""
        rel = osp.relpath(img_path, self.image_root)
        cache = self.prior_cache(self._feature_size)
        if rel not in cache:
            if self.configured_options().on_missing == "error":
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


class OfflineTranslation:
    """The paper's offline translation (Sec. 5.1, [53]): the training set enlarged by shifted
    copies, one shift per image and copy."""

    def _init_translation(self, opts: Optional[PriorOptions]) -> None:
        """Enlarge the train split to ``opts.offline_translation_copies`` copies (copy c of
        image i is entry c * n + i) and draw their shifts; nothing with one copy."""
        self._shifts = None  # (len(data), 2) (dy, dx) per item; None = no translation
        if self.mode != "train" or opts is None or opts.offline_translation_copies <= 1:
            return
        self._shifts = offline_translation_shifts(
            [osp.relpath(p, self.image_root) for p, *_ in self.train],
            opts.offline_translation_copies, tuple(opts.offline_translation_max_shift),
            seed=opts.seed)
        self.train = [item for _ in range(opts.offline_translation_copies) for item in self.train]
        self.data = self.train

    def translation_of(self, index: int):
        """(dy, dx) offline translation (fractions of the height/width) of train item ``index``
        (drawn per image and per copy)."""
        if self._shifts is None:
            return 0.0, 0.0
        dy, dx = self._shifts[index]
        return float(dy), float(dx)


class PriorAwareMixin(PriorCacheLookup, OfflineTranslation):
    """Item building: adds coarse-prior fields to train items of a torchreid ``ImageDataset``
    subclass (``prior_options`` is set when the class is registered)."""

    def _init_priors(self):
        """Called at the end of ``__init__``, once the splits are read."""
        self._cache = None
        self._joint = None
        self._feature_size = None
        self._missing_count = 0
        self._init_translation(self.prior_options)

    def transformed_pair(self, index: int):
        """(image tensor, mask at image resolution or None) of train item ``index``: the
        offline translation copy, then the joint online transforms."""
        if self._joint is None:
            self._joint = JointTransform.from_compose(self.transform)
            h, w = self._joint.output_size()
            stride = self.configured_options().feature_stride
            self._feature_size = (h // stride, w // stride)
        img_path = self.data[index][0]
        img = compat.read_image(img_path)  # raises on an unreadable file (no endless retry)
        mask = self.stage1_mask(img_path)
        if mask is not None and mask.shape != (img.height, img.width):
            mask = cv2.resize(mask.astype(np.float32), (img.width, img.height),
                              interpolation=cv2.INTER_LINEAR)
        dy, dx = self.translation_of(index)
        if dx or dy:
            img, mask = translate_pair(img, mask, int(round(dx * img.width)),
                                       int(round(dy * img.height)))
        return self._joint(img, mask)

    def __getitem__(self, index):
        plain = self.prior_options is not None and not self.prior_options.enabled
        if self.mode != "train" or plain or self.transform is None:
            return compat.image_dataset_item(self, index)  # torchreid's item, failing fast
        opts = self.configured_options()
        if self.k_tfm != 1:
            raise ValueError("prior-aware datasets support data.k_tfm=1 only")
        img_path, pid, camid, dsetid = self.data[index]
        img_t, mask_t = self.transformed_pair(index)
        prior = coarse_prior_from_mask(mask_t, self._feature_size,
                                       PriorConfig(binarize_threshold=opts.binarize_threshold))
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
