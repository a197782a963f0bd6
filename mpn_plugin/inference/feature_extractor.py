"""Features of any images with a trained model: the counterpart of torchreid's
``torchreid.utils.FeatureExtractor`` for MPN (and for the torchreid baselines we train).

The features are the ones the evaluator ranks (Sec. 4, Eq. 2 and 11): the test-time graph of
:class:`mpn_plugin.export.InferenceModel` (backbone + K main-task heads, ``h = [f_1..f_K]``),
optionally plus the flipped image (``test.flip``), under optional mixed precision
(``test.amp``, :func:`mpn_plugin.engine.mixins.amp_dtype`), L2-normalised, on images read as
RGB and preprocessed with torchreid's test transform (resize, to tensor, normalise with
``data.norm_mean``/``data.norm_std``). An ONNX graph written by ``tools/export_onnx.py``
gives the same features without PyTorch's model code.

Examples::

    >>> extractor = FeatureExtractor(config_file='configs/mpn_synthetic.yaml',
    ...                              checkpoint='log/mpn_synthetic/model/model.pth.tar-12')
    >>> feats = extractor(['a.jpg', 'b.jpg'])                 # (2, K*D), L2-normalised
    >>> onnx_extractor = FeatureExtractor(onnx='exported/mpn.onnx')
    >>> result = extractor.extract(paths, skip_unreadable=True)
    >>> result.features.shape, result.skipped                 # skipped: [(index, name, reason)]
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from .. import compat
from ..engine.mixins import amp_dtype
from ..export import InferenceModel
from ..models.pretrained import sha256_of
from ..progress import progress_bar as tqdm

__all__ = ["FeatureExtractor", "Extraction", "UnreadableImageError", "read_rgb_image"]


UnreadableImageError = compat.UnreadableImageError
SKIP_FIX = ("Replace or remove the file, or skip such files with skip_unreadable=True (tools: "
            "--skip-unreadable), which lists every skipped file")


def _unreadable(name: str, reason: str) -> UnreadableImageError:
    return UnreadableImageError(f"cannot read image {name!r}: {reason}. {SKIP_FIX}", name, reason)


class Extraction(NamedTuple):
    """Result of :meth:`FeatureExtractor.extract`.

    Attributes:
        features (torch.Tensor): (M, K*D) float32, L2-normalised, one row per kept input.
        indices (list of int): position in the input of each feature row (M entries).
        skipped (list of (int, str, str)): (position, name, reason) of each unreadable input.
    """
    features: torch.Tensor
    indices: List[int]
    skipped: List[Tuple[int, str, str]]


def read_rgb_image(path: str) -> Image.Image:
    """Decode ``path`` as an RGB PIL image (:func:`compat.read_image`, which never retries
    forever), raising :class:`UnreadableImageError` for a missing file too."""
    if not osp.isfile(path):
        raise _unreadable(path, "file missing")
    return compat.read_image(path, fix=SKIP_FIX)


def _input_name(item, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return f"input #{index} ({type(item).__name__})"


class _Preprocessed(torch.utils.data.Dataset):
    """Inputs -> (index, (3, H, W) tensor or None, reason it is unreadable or ""); used through
    a DataLoader so that decoding can run in worker processes."""

    def __init__(self, items: Sequence, transform, bgr: bool):
        self.items, self.transform, self.bgr = items, transform, bgr

    def __len__(self):
        return len(self.items)

    def to_tensor(self, item) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            return item.float()                                 # already preprocessed
        if isinstance(item, (str, os.PathLike)):
            item = read_rgb_image(os.fspath(item))
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim not in (2, 3) or (
                    item.ndim == 3 and item.shape[2] not in (1, 3)):
                raise ValueError(f"numpy image: expected (H, W) or (H, W, 3) uint8, got "
                                 f"{item.shape} {item.dtype}")
            if item.ndim == 3 and item.shape[2] == 3 and self.bgr:
                item = item[:, :, ::-1]                         # OpenCV BGR -> RGB
            item = Image.fromarray(np.ascontiguousarray(item.squeeze()))
        if not isinstance(item, Image.Image):
            raise TypeError(f"unsupported input {type(item).__name__}: pass image paths, PIL "
                            "images, (H, W, 3) uint8 numpy arrays or preprocessed tensors")
        return self.transform(item.convert("RGB"))

    def __getitem__(self, i):
        try:
            return i, self.to_tensor(self.items[i]), ""
        except UnreadableImageError as exc:
            return i, None, exc.reason


class FeatureExtractor:
    """L2-normalised (N, K*D) features of images, as the project's evaluator computes them.

    Build it from one of: a training config plus checkpoint, an exported ONNX file, or a
    model object.

    Args:
        config_file (str, optional): YAML the model was trained with (gives the input size,
            normalisation, ``test.flip`` and ``test.amp``). With ``onnx``: only for these
            preprocessing values.
        checkpoint (str, optional): checkpoint written by ``tools/train.py`` (loaded with
            ``weights_only=True``).
        onnx (str, optional): graph written by ``tools/export_onnx.py``; input size from the
            graph, flip as exported (``--flip``).
        model (nn.Module, optional): a model in memory (needs ``height`` and ``width``).
        opts (sequence): config overrides, ``key value`` pairs.
        height, width (int, optional): input size (default: config / ONNX graph).
        norm_mean, norm_std (sequence, optional): default: config, else ImageNet's.
        device (str, optional): ``cuda`` or ``cpu`` (default: cuda when available).
        batch_size (int): images per forward pass.
        amp (bool, optional): mixed-precision forward (default ``test.amp``); torch only.
        flip (bool, optional): add the horizontally flipped image's features (default
            ``test.flip``); torch only (for ONNX it is fixed at export).
        bgr (bool): numpy inputs are BGR (OpenCV) instead of RGB.
        num_workers (int): DataLoader workers decoding images.
        progress (bool, optional): tqdm bar (default: when there is more than one batch).

    Examples::

        >>> extractor = FeatureExtractor(config_file='configs/mpn_synthetic.yaml',
        ...                              checkpoint='model.pth.tar-12', device='cpu')
        >>> extractor(['q.jpg', cv2.imread('g.jpg')]).shape      # second one is BGR: bgr=True
        torch.Size([2, 3072])
    """

    def __init__(self, config_file: Optional[str] = None, checkpoint: Optional[str] = None,
                 onnx: Optional[str] = None, model: Optional[nn.Module] = None, opts=(),
                 height: Optional[int] = None, width: Optional[int] = None,
                 norm_mean: Optional[Sequence[float]] = None,
                 norm_std: Optional[Sequence[float]] = None, device: Optional[str] = None,
                 batch_size: int = 64, amp: Optional[bool] = None, flip: Optional[bool] = None,
                 bgr: bool = False, num_workers: int = 0, progress: Optional[bool] = None):
        from ..build import load_config, load_trained_model

        sources = [name for name, v in (("checkpoint", checkpoint), ("onnx", onnx),
                                        ("model", model)) if v is not None]
        if len(sources) != 1:
            raise ValueError("FeatureExtractor: give exactly one of checkpoint= (with "
                             f"config_file=), onnx= or model=, got {sources or 'none'}")
        if checkpoint is not None and config_file is None:
            raise ValueError(f"FeatureExtractor: checkpoint {checkpoint!r} needs the "
                             "config_file= it was trained with")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size, self.bgr, self.num_workers = int(batch_size), bool(bgr), num_workers
        self.progress = progress
        self.metadata = {"kind": sources[0]}
        cfg = None
        if checkpoint is not None:
            model, cfg = load_trained_model(config_file, checkpoint, opts=opts)
            self.metadata.update(checkpoint=osp.abspath(checkpoint),
                                 checkpoint_sha256=sha256_of(checkpoint))
        elif config_file is not None:
            cfg = load_config(config_file, opts)
        if cfg is not None:
            self.metadata.update(config_file=osp.abspath(config_file),
                                 config_hash=hashlib.sha256(cfg.dump().encode()).hexdigest()[:16])
            height, width = height or cfg.data.height, width or cfg.data.width
            norm_mean, norm_std = norm_mean or cfg.data.norm_mean, norm_std or cfg.data.norm_std
            flip = cfg.test.flip if flip is None else flip
            amp = cfg.test.amp if amp is None else amp
        self.session = None
        if onnx is not None:
            if flip or amp:
                raise ValueError(f"FeatureExtractor(onnx={onnx!r}): flip and amp are fixed when "
                                 "the graph is exported (tools/export_onnx.py --flip); pass "
                                 "flip=False, amp=False")
            height, width = self._open_onnx(onnx, height, width)
            self.metadata.update(onnx=osp.abspath(onnx), onnx_sha256=sha256_of(onnx))
        else:
            if height is None or width is None:
                raise ValueError("FeatureExtractor(model=...): pass height= and width= (the "
                                 "input size the model was trained with)")
            self.net = InferenceModel(model, normalize=True, flip=bool(flip)).to(self.device)
            self.net.eval()
        self.height, self.width = int(height), int(width)
        self.flip, self.amp = bool(flip), bool(amp)
        norm_mean = list(norm_mean or (0.485, 0.456, 0.406))
        norm_std = list(norm_std or (0.229, 0.224, 0.225))
        with contextlib.redirect_stdout(io.StringIO()):          # torchreid prints its steps
            _, self.transform = compat.transforms.build_transforms(
                self.height, self.width, transforms=None, norm_mean=norm_mean, norm_std=norm_std)
        self.metadata.update(height=self.height, width=self.width, norm_mean=norm_mean,
                             norm_std=norm_std, flip=self.flip, amp=self.amp)

    def _open_onnx(self, path: str, height, width) -> Tuple[int, int]:
        import onnxruntime as ort

        if not osp.isfile(path):
            raise FileNotFoundError(f"ONNX file {path!r} does not exist; write it with "
                                    "python tools/export_onnx.py --config-file ... --checkpoint "
                                    f"... --out {path}")
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(path, providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        graph_hw = [d if isinstance(d, int) else None for d in inp.shape[2:]]
        for name, given, fixed in zip(("height", "width"), (height, width), graph_hw):
            if given is not None and fixed is not None and given != fixed:
                raise ValueError(f"ONNX file {path!r} takes {name} {fixed}, got {name}={given}")
        return height or graph_hw[0], width or graph_hw[1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) preprocessed images -> (n, K*D) float32 L2-normalised, on CPU."""
        if images.shape[1:] != (3, self.height, self.width):
            raise ValueError(f"preprocessed images must be (N, 3, {self.height}, {self.width}), "
                             f"got {tuple(images.shape)}")
        if self.session is not None:
            out = self.session.run(None, {self.input_name: images.cpu().numpy()})[0]
            return F.normalize(torch.from_numpy(out).float(), dim=1)    # graph may be raw
        dev = self.device.type
        with torch.autocast(device_type=dev, dtype=amp_dtype(dev), enabled=self.amp):
            out = self.net(images.to(self.device)).float()
        return (F.normalize(out, dim=1) if self.amp else out).cpu()    # amp: renormalise in f32

    def extract(self, inputs, skip_unreadable: bool = False) -> Extraction:
        """Features of ``inputs`` (a path, PIL image, numpy array, tensor, or a sequence of
        them; a 4-D tensor is a preprocessed batch).

        Args:
            inputs: the images.
            skip_unreadable (bool): leave out unreadable files and list them in
                ``Extraction.skipped`` instead of raising :class:`UnreadableImageError`.
        """
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4:
            inputs = list(inputs)
        elif isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
            inputs = [inputs]
        inputs = list(inputs)
        loader = torch.utils.data.DataLoader(
            _Preprocessed(inputs, self.transform, self.bgr), batch_size=self.batch_size,
            num_workers=self.num_workers, collate_fn=list)
        show = self.progress if self.progress is not None else len(inputs) > self.batch_size
        feats, indices, skipped = [], [], []
        with tqdm(total=len(inputs), desc="features", unit="img",
                  disable=None if show else True, leave=False) as bar:
            for batch in loader:
                for i, _, reason in batch:
                    if reason and not skip_unreadable:
                        raise _unreadable(_input_name(inputs[i], i), reason)
                    if reason:
                        skipped.append((i, _input_name(inputs[i], i), reason))
                ok = [(i, x) for i, x, reason in batch if not reason]
                if ok:
                    feats.append(self.forward(torch.stack([x for _, x in ok])))
                    indices += [i for i, _ in ok]
                bar.update(len(batch))
        dim = feats[0].shape[1] if feats else 0
        return Extraction(torch.cat(feats) if feats else torch.zeros(0, dim), indices, skipped)

    def __call__(self, inputs) -> torch.Tensor:
        """(N, K*D) features of ``inputs``; an unreadable file raises
        :class:`UnreadableImageError` naming it."""
        return self.extract(inputs).features
