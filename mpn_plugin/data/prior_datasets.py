"""Every dataset mpn_plugin adds to torchreid, registered from one table.

Prior-aware datasets (torchreid's or our dataset classes with MPN's coarse priors on their train
items, :class:`~mpn_plugin.data.prior_mixin.PriorAwareMixin`) are listed in
:data:`PRIOR_DATASETS` (name -> base class, folder); :func:`register_prior_datasets` builds each
with :func:`prior_aware`, the :class:`~mpn_plugin.data.prior_mixin.PriorOptions` it is given
attached as a class attribute, and registers it together with the plain datasets of
:data:`PLAIN_DATASETS`.

Registered names: ``market1501_prior``, ``dukemtmcreid_prior``, ``cuhk03_prior``,
``msmt17_prior``, the synthetic dataset ``synthetic_pedestrians``, ``custom_crops_prior``
(:mod:`mpn_plugin.data.manifest`) and ``occluded_duke_prior``
(:mod:`mpn_plugin.data.occluded_datasets`) with priors; ``custom_crops``, ``occluded_duke``,
``occluded_reid`` and ``partial_reid`` without.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import os.path as osp
import warnings
from typing import Dict, NamedTuple, Optional

from .. import compat
from .manifest import ManifestDataset
from .occluded_datasets import OCCLUDED_DATASETS, OccludedDuke
from .prior_mixin import PriorAwareMixin, PriorOptions

__all__ = ["PriorDataset", "PRIOR_DATASETS", "PLAIN_DATASETS", "prior_aware",
           "register_prior_datasets"]


class PriorDataset(NamedTuple):
    """A row of :data:`PRIOR_DATASETS`.

    Attributes:
        base (type): the dataset class the priors are added to.
        folder (str or None): the dataset folder under ``data.root``, checked (it exists, no
            split is empty) around ``base.__init__`` with errors naming the fix; None: ``base``
            finds and checks its own folder.
    """
    base: type
    folder: Optional[str]


def _torchreid(module: str, class_name: str, folder: Optional[str] = None) -> PriorDataset:
    """A row for torchreid's ``data.datasets.image.<module>.<class_name>`` (in its own folder
    unless ``folder`` is given)."""
    base = getattr(compat.submodule("data.datasets.image." + module), class_name)
    return PriorDataset(base, folder or base.dataset_dir)


PRIOR_DATASETS: Dict[str, PriorDataset] = {
    "market1501_prior": _torchreid("market1501", "Market1501"),
    "dukemtmcreid_prior": _torchreid("dukemtmcreid", "DukeMTMCreID"),
    "cuhk03_prior": _torchreid("cuhk03", "CUHK03"),
    "msmt17_prior": _torchreid("msmt17", "MSMT17"),
    "synthetic_pedestrians": _torchreid("market1501", "Market1501", "synthetic_pedestrians"),
    "custom_crops_prior": PriorDataset(ManifestDataset, None),   # cache beside the manifest
    "occluded_duke_prior": PriorDataset(OccludedDuke, None),     # cache in Occluded_Duke/
}

PLAIN_DATASETS: Dict[str, type] = {"custom_crops": ManifestDataset, **OCCLUDED_DATASETS}


def missing_dataset_message(name: str, path: str) -> str:
    return (f"dataset '{name}' not found: the folder '{path}' does not exist. Put the dataset "
            f"there (data.root is its parent), or change data.root / --root. For the synthetic "
            f"dataset run: python tools/make_synthetic_dataset.py --root {osp.dirname(path)}")


def _split_counts(path: str) -> str:
    counts = {d: len(glob.glob(osp.join(path, d, "*.jpg"))) for d in sorted(os.listdir(path))
              if osp.isdir(osp.join(path, d))}
    return "image counts per folder " + ", ".join(f"{d}: {n}" for d, n in counts.items())


def _read_checked(dataset, base, name: str, root: str, kwargs) -> None:
    """``base.__init__`` of a dataset in ``<root>/<dataset_dir>``, with errors that name the
    folder: a missing folder, a split torchreid cannot read, an empty split."""
    path = osp.join(osp.abspath(osp.expanduser(root)), type(dataset).dataset_dir)
    if not osp.isdir(path):
        raise FileNotFoundError(missing_dataset_message(name, path))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The current data structure is deprecated")
        try:
            base.__init__(dataset, root=root, **kwargs)
        except (IndexError, ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"dataset '{name}' in '{path}' could not be read ({exc}): "
                             f"{_split_counts(path)}; an empty split (no images) is the "
                             f"usual cause") from exc
    for split in ("train", "query", "gallery"):
        if not getattr(dataset, split):
            raise ValueError(f"dataset '{name}' in '{path}' has an empty {split} split: "
                             f"{_split_counts(path)}")


def prior_aware(base, name: str, folder: Optional[str] = None,
                options: Optional[PriorOptions] = None) -> type:
    """The prior-aware subclass of the dataset class ``base``, registered as ``name``.

    Args:
        base (type): a torchreid ``ImageDataset`` subclass.
        name (str): its registered name (for messages).
        folder (str, optional): the dataset folder under ``data.root`` (its ``dataset_dir``),
            checked around ``base.__init__``; None: ``base`` finds its own folder.
        options (PriorOptions, optional): the options of its items (a copy is attached); None:
            none yet (train items with priors then raise, naming the call that sets them).

    Examples::

        >>> market = compat.submodule("data.datasets.image.market1501").Market1501
        >>> cls = prior_aware(market, "my_market_prior", "my_market",
        ...                   PriorOptions(feature_stride=16))
        >>> compat.register_image_dataset("my_market_prior", cls)
    """
    attrs = {"__doc__": f"{base.__name__} with coarse priors (registered as '{name}')",
             "dataset_url": None,
             "prior_options": None if options is None else dataclasses.replace(options)}
    if folder is not None:
        attrs["dataset_dir"] = folder

    def __init__(self, root: str = "", **kwargs):
        if folder is None:
            base.__init__(self, root=root, **kwargs)
        else:
            _read_checked(self, base, name, root, kwargs)
        self._init_priors()

    attrs["__init__"] = __init__
    return type(base.__name__ + "Prior", (PriorAwareMixin, base), attrs)


def register_prior_datasets(options: Optional[PriorOptions] = None) -> None:
    """Register (or re-register with new ``options``) every dataset of :data:`PRIOR_DATASETS`
    and :data:`PLAIN_DATASETS` with torchreid.

    Args:
        options (PriorOptions, optional): the options of every prior-aware dataset
            (importing the package registers ``PriorOptions(feature_stride=16)``); None: the
            names are registered, train items with priors need options first.

    Examples::

        >>> register_prior_datasets(PriorOptions.from_cfg(cfg, enabled=True,
        ...                                               feature_stride=feature_stride(cfg)))
    """
    for name, row in PRIOR_DATASETS.items():
        compat.register_image_dataset(name, prior_aware(row.base, name, row.folder, options),
                                      overwrite=True)
    for name, cls in PLAIN_DATASETS.items():
        compat.register_image_dataset(name, cls, overwrite=True)
