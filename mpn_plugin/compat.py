"""The single place that knows torchreid's two layouts and its known breakages.

* PyPI ``torchreid==0.2.5`` ("Torchreid-Pip") is deep-person-reid 1.4.0 moved under
  ``torchreid.reid.*``; upstream deep-person-reid installs as ``torchreid.*``. Everything else
  in this package imports torchreid through :data:`reid` (or the sub-module aliases below).
* Work-arounds, without patching site-packages:

  - checkpoints: torchreid stores ``rank1`` as a numpy scalar, which ``torch.load`` rejects
    under ``weights_only=True`` (torch >= 2.6). :func:`save_checkpoint` writes plain Python
    numbers; :func:`load_checkpoint` always uses ``weights_only=True`` and allow-lists only the
    numpy scalar types so checkpoints written by torchreid itself load too.
    Checkpoints are written atomically (temporary file + rename, :func:`save_atomically`), and
    a truncated or refused file raises an error naming it.
  - ``Engine.save_model`` crashes when ``scheduler=None``: :class:`SafeCheckpointMixin`.
  - ``utils.read_image`` retries an unreadable image forever (training hangs):
    :func:`read_image` raises at the first failure, naming the file.
  - ``models.__model_factory`` is a module-level dict with no register function:
    :func:`register_model`.

Examples::

    >>> from mpn_plugin import compat
    >>> compat.LAYOUT in ('pypi', 'upstream')
    True
    >>> model = compat.models.build_model('resnet18', num_classes=10, pretrained=False)
"""
from __future__ import annotations

import importlib
import os
import os.path as osp
import pickle
import re
import shutil
import warnings
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch

from .file_io import save_atomically  # noqa: F401  (re-exported: compat.save_atomically)

# torchreid's rank module warns at every import when its Cython extension is absent (always the
# case for the PyPI package). mpn_plugin.evaluation provides the fast vectorised replacement.
warnings.filterwarnings("ignore", message="Cython evaluation", category=UserWarning)


def _import_torchreid():
    try:
        mod = importlib.import_module("torchreid.reid")
        importlib.import_module("torchreid.reid.models")
        return mod, "pypi"
    except ImportError:
        pass
    try:
        mod = importlib.import_module("torchreid")
        importlib.import_module("torchreid.models")
        return mod, "upstream"
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mpn_plugin needs torchreid: `pip install torchreid==0.2.5` (PyPI) or install "
            "deep-person-reid from source (`python setup.py develop` in its checkout)."
        ) from exc


#: The torchreid namespace that holds ``models, data, engine, losses, metrics, optim, utils``.
reid, LAYOUT = _import_torchreid()
models = importlib.import_module(reid.__name__ + ".models")
data = importlib.import_module(reid.__name__ + ".data")
engine = importlib.import_module(reid.__name__ + ".engine")
losses = importlib.import_module(reid.__name__ + ".losses")
metrics = importlib.import_module(reid.__name__ + ".metrics")
optim = importlib.import_module(reid.__name__ + ".optim")
utils = importlib.import_module(reid.__name__ + ".utils")
transforms = importlib.import_module(reid.__name__ + ".data.transforms")
datasets = importlib.import_module(reid.__name__ + ".data.datasets")
ImageDataset = data.ImageDataset


def submodule(path: str):
    """Import ``<torchreid root>.<path>``, e.g. ``submodule('models.resnet')``."""
    return importlib.import_module(reid.__name__ + "." + path)


# ---------------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------------
def model_factory() -> Dict[str, Callable]:
    """torchreid's model name -> constructor dict (``models.__model_factory``)."""
    return vars(models)["__model_factory"]


def register_model(name: str, fn: Callable, overwrite: bool = False) -> None:
    """Add ``fn`` to torchreid's model factory so ``build_model(name, ...)`` finds it.

    ``build_model`` passes exactly ``num_classes, loss, pretrained, use_gpu``; bind other
    hyper-parameters with ``functools.partial``.
    """
    factory = model_factory()
    if name in factory and factory[name] is not fn and not overwrite:
        raise KeyError(f"model name '{name}' is already registered in torchreid's factory")
    factory[name] = fn


def register_image_dataset(name: str, cls, overwrite: bool = False) -> None:
    """Register ``cls`` with torchreid; re-registering the same class is a no-op, and
    ``overwrite=True`` replaces an earlier registration (e.g. with new options)."""
    registry = vars(datasets)["__image_datasets"]
    if registry.get(name) is cls:
        return
    if overwrite:
        registry[name] = cls
        return
    if name in registry:
        raise KeyError(f"dataset name '{name}' is already registered with torchreid by "
                       f"{registry[name]}")
    data.register_image_dataset(name, cls)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
class UnreadableImageError(OSError):
    """An image file that cannot be read (missing, truncated, empty, not an image).

    Attributes:
        path (str): the file (None for an error about several files).
        reason (str): why it cannot be read.
    """

    def __init__(self, message: str, path: Optional[str] = None, reason: Optional[str] = None):
        super().__init__(message)
        self.path, self.reason = path, reason


READ_IMAGE_FIX = ("Replace or delete it, or set data.corrupt_images skip to leave such files out "
                  "(they are listed in save_dir/skipped_images.txt)")


def read_image(path: str, fix: str = READ_IMAGE_FIX):
    """torchreid's ``read_image`` (PIL, RGB) without its endless retry loop.

    torchreid's version catches ``IOError`` and tries again forever, so one truncated or
    non-image file hangs training (with any number of data workers); here the first failure
    raises, naming the file.

    Args:
        path (str): the image file.
        fix (str): what the error message tells the user to do (training's option by default).

    Raises:
        FileNotFoundError: the file does not exist.
        UnreadableImageError: the file cannot be decoded.

    Examples::

        >>> img = read_image('data/synthetic_pedestrians/query/0000_c1s1_000000_00.jpg')
    """
    from PIL import Image
    if not osp.isfile(path):
        raise FileNotFoundError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:  # UnidentifiedImageError, truncated data, broken headers
        reason = f"{type(exc).__name__}: {exc}"
        raise UnreadableImageError(
            f"image '{path}' cannot be read ({reason}): it is truncated, empty or not an image. "
            f"{fix}", path, reason) from None


def image_dataset_item(dataset, index: int) -> Dict[str, Any]:
    """``ImageDataset.__getitem__`` of torchreid (``img, pid, camid, impath, dsetid``), with
    the image read by :func:`read_image` (an unreadable file raises at once)."""
    img_path, pid, camid, dsetid = dataset.data[index]
    img = read_image(img_path)
    if dataset.transform is not None:
        img = dataset._transform_image(dataset.transform, dataset.k_tfm, img)
    return {"img": img, "pid": pid, "camid": camid, "impath": img_path, "dsetid": dsetid}


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, recursively (so ``weights_only=True`` can load them)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return type(value)((k, _plain(v)) for k, v in value.items()) if not isinstance(
            value, OrderedDict) else OrderedDict((k, _plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def save_checkpoint(state: Dict[str, Any], save_dir: str, is_best: bool = False,
                    filename: Optional[str] = None) -> str:
    """Save ``state`` as ``save_dir/model.pth.tar-<epoch>`` (torchreid's naming), atomically.

    Unlike torchreid's ``save_checkpoint``, numpy scalars are stored as Python numbers so the
    file loads with ``torch.load(..., weights_only=True)``, and the file is written to a
    temporary file of the same folder, then renamed (:func:`save_atomically`): training killed
    during the write leaves the previous checkpoint of that name intact.

    Returns:
        str: the path written.
    """
    os.makedirs(save_dir, exist_ok=True)
    state = {k: (v if k in ("state_dict", "optimizer", "scheduler") else _plain(v))
             for k, v in state.items()}
    fpath = osp.join(save_dir, filename or f"model.pth.tar-{state.get('epoch', 0)}")
    save_atomically(lambda tmp: torch.save(state, tmp), fpath)
    print(f'Checkpoint saved to "{fpath}"')
    if is_best:
        save_atomically(lambda tmp: shutil.copyfile(fpath, tmp),
                        osp.join(save_dir, "model-best.pth.tar"))
    return fpath


class DamagedCheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, empty, not a torch file)."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint refused by ``weights_only=True`` (it holds arbitrary pickled objects)."""


def _numpy_safe_globals():
    safe = [np.dtype]
    core = getattr(np, "_core", None) or getattr(np, "core")
    safe.append(core.multiarray.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        safe += [getattr(dtypes, n) for n in ("Float32DType", "Float64DType", "Int64DType")
                 if hasattr(dtypes, n)]
    return safe


def load_checkpoint(fpath: str, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Checkpoints written by torchreid's own engine (numpy ``rank1``) load too: only numpy's
    scalar and dtype types are allow-listed, nothing else.

    Raises:
        FileNotFoundError: with the path when the file does not exist.
        DamagedCheckpointError: the file is truncated or not a checkpoint (names the file).
        UnsafeCheckpointError: the file holds pickled objects that ``weights_only=True``
            refuses (names the file and the refused globals).
    """
    if not fpath or not osp.isfile(fpath):
        raise FileNotFoundError(
            f"checkpoint '{fpath}' does not exist; pass the path of a model.pth.tar-N file "
            "written by tools/train.py (look in the run's save_dir)")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            ckpt = torch.load(fpath, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError) as exc:
        refused = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(exc))))
        if isinstance(exc, pickle.UnpicklingError) and (refused or "Unsupported" in str(exc)):
            # torch's own message suggests weights_only=False: not shown (from None)
            raise UnsafeCheckpointError(
                f"checkpoint '{fpath}' was refused for safety: besides tensors and numbers it "
                f"holds Python objects{' (' + ', '.join(refused) + ')' if refused else ''}, "
                "which could run code when loaded. Load only checkpoints written by "
                "tools/train.py (or plain state dicts of tensors) from sources you trust."
            ) from None
        lines = str(exc).strip().splitlines()
        first_line = lines[0] if lines else "unexpected end of file"
        raise DamagedCheckpointError(
            f"checkpoint '{fpath}' ({osp.getsize(fpath):,} bytes) is damaged or truncated and "
            f"cannot be read ({type(exc).__name__}: {first_line}). It was probably being "
            "written when a run was killed, or copied incompletely. Use another checkpoint of "
            "the run (model.pth.tar-N in its save_dir/model), copy the file again, or train "
            "again.") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint '{fpath}' holds a {type(ckpt).__name__}, expected a dict")
    return ckpt


def state_dict_of(ckpt: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict (``state_dict`` key or the dict itself),
    without DataParallel/DDP ``module.`` prefixes."""
    sd = ckpt.get("state_dict", ckpt)
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in sd.items())


def load_model_weights(model: torch.nn.Module, fpath: str, strict: bool = True) -> Dict[str, Any]:
    """Load a checkpoint's weights into ``model``.

    Raises:
        ValueError: when the checkpoint belongs to another model (missing/unexpected keys or
            shape mismatches), naming the first offending keys.
    """
    ckpt = load_checkpoint(fpath)
    sd = state_dict_of(ckpt)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise ValueError(
            f"checkpoint '{fpath}' does not fit {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]}, {len(mismatched)} shape mismatches {mismatched[:3]}. Was it saved "
            "from another model or config (model.name, mpn.num_parts, num_classes)?")
    model.load_state_dict({k: v for k, v in sd.items() if k in own and k not in mismatched},
                          strict=False)
    return ckpt


def resume_from_checkpoint(fpath: str, model: torch.nn.Module, optimizer=None,
                           scheduler=None) -> int:
    """Restore model, optimizer and scheduler; returns the epoch to start from."""
    ckpt = load_model_weights(model, fpath)
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    start_epoch = int(ckpt.get("epoch", 0))
    print(f'Resumed from "{fpath}": start epoch {start_epoch}, last rank1 {ckpt.get("rank1")}')
    return start_epoch


class SafeCheckpointMixin:
    """Mix into a torchreid ``Engine`` subclass: ``save_model`` works with ``scheduler=None``
    and writes checkpoints that load with ``weights_only=True``."""

    def save_model(self, epoch, rank1, save_dir, is_best=False):
        """Write one checkpoint per registered model; returns their paths."""
        paths = []
        for name in self.get_model_names():
            sched = self._scheds[name]
            paths.append(save_checkpoint(
                {
                    "state_dict": self._models[name].state_dict(),
                    "epoch": epoch + 1,
                    "rank1": float(rank1) if rank1 is not None else None,
                    "optimizer": self._optims[name].state_dict() if self._optims[name] else None,
                    "scheduler": sched.state_dict() if sched is not None else None,
                },
                osp.join(save_dir, name),
                is_best=is_best,
            ))
        return paths
