"""The test-time model as a standalone module and as an ONNX graph (Sec. 4).

At test time MPN keeps only the backbone and the K main-task heads: the image representation
is ``h = [f_1, ..., f_K]`` (Eq. 2), compared with the cosine distance (Eq. 11). The auxiliary
tasks, the priors and the classifiers are training-only, so :class:`InferenceModel` holds none
of them and the exported graph has none of their parameters. For the Baseline (ATs only,
Sec. 5.2.1) the AT heads on a uniform division of F are the test-time heads.

Examples::

    >>> model = build_mpn(num_classes=10, backbone='resnet18').eval()
    >>> export_onnx(model, 'mpn.onnx', height=128, width=64)
    >>> feats = onnx_features('mpn.onnx', images)        # (N, K*D), L2-normalised
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models.mpn import MPN, inference_features


class InferenceModel(nn.Module):
    """Backbone + test-time heads of a trained model, with optional flip test and L2 norm.

    Args:
        model (nn.Module): a trained :class:`~mpn_plugin.models.MPN` (only its backbone and
            test-time heads are kept) or any torchreid model whose eval forward returns
            features (kept whole; its classifier is unused at test time).
        normalize (bool): L2-normalise the output (cosine distance = 1 - dot product).
        flip (bool): add the features of the horizontally flipped image (the ``test.flip``
            protocol), before normalisation.

    Examples::

        >>> net = InferenceModel(model, normalize=True).eval()
        >>> net(torch.randn(2, 3, 128, 64)).shape
        torch.Size([2, 3072])
    """

    def __init__(self, model: nn.Module, normalize: bool = True, flip: bool = False):
        super().__init__()
        self.normalize = normalize
        self.flip = flip
        if isinstance(model, MPN):
            self.backbone = model.backbone
            self.backbone_attention = model.backbone_attention     # MPN*'s RGA-S, or None
            self.readout = model.readout                               # test.readout
            # only the heads that the readout runs are kept (and exported)
            uses_at = model.main_heads is None or self.readout != "mt"
            self.main_heads = model.main_heads if self.readout != "at_uniform" else None
            self.auxiliary_heads = model.auxiliary_heads if uses_at else None
            self.num_parts = model.num_parts
            self.model = None
        else:
            self.model = model

    def features(self, x: torch.Tensor, flip: bool = False) -> torch.Tensor:
        """The test-time features of ``x`` (:func:`~mpn_plugin.models.inference_features`: the
        MPN parts kept here, with MPN's readout h (Eq. 2), the Baseline's g or
        ``test.readout``; or the whole torchreid model), not normalised."""
        return inference_features(self if self.model is None else self.model, x, flip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x, self.flip)
        return F.normalize(out, dim=1) if self.normalize else out


def export_onnx(model: nn.Module, path: str, height: int = 384, width: int = 128,
                normalize: bool = True, flip: bool = False, opset: Optional[int] = None,
                dynamo: bool = False) -> InferenceModel:
    """Export the test-time graph of ``model`` to ONNX with a dynamic batch axis.

    Input ``images``: (N, 3, height, width) float32, RGB, normalised with the training
    ``data.norm_mean``/``norm_std``; output ``features``: (N, K*D).

    Args:
        model (nn.Module): trained model (see :class:`InferenceModel`).
        path (str): output ``.onnx`` file.
        height, width (int): input size the model was trained with.
        normalize (bool): L2-normalise the features inside the graph.
        flip (bool): include the flip test in the graph.
        opset (int, optional): ONNX opset (default: the exporter's).
        dynamo (bool): use the ``torch.export``-based exporter instead of TorchScript tracing.

    Returns:
        InferenceModel: the exported module (eval mode, on CPU).
    """
    net = InferenceModel(model, normalize=normalize, flip=flip).cpu().eval()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    dummy = torch.randn(2, 3, height, width)
    kwargs = dict(input_names=["images"], output_names=["features"], dynamo=dynamo)
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        kwargs["dynamic_shapes"] = {"x": {0: torch.export.Dim("batch", min=1)}}
    else:
        kwargs["dynamic_axes"] = {"images": {0: "batch"}, "features": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(net, (dummy,), path, **kwargs)
    return net


def onnx_features(path: str, images: np.ndarray, batch_size: int = 64,
                  providers=("CPUExecutionProvider",)) -> np.ndarray:
    """Features of ``images`` (N, 3, H, W float32, preprocessed as for training) with
    onnxruntime, in batches. Returns (N, K*D) float32."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=list(providers))
    name = session.get_inputs()[0].name
    images = np.ascontiguousarray(images, dtype=np.float32)
    return np.concatenate([session.run(None, {name: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)])


def onnx_parameter_names(path: str):
    """{initializer name: number of elements} of an exported graph (for audits: no AT or
    classifier parameter may appear)."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    return {t.name: int(np.prod(t.dims)) if len(t.dims) else 1 for t in graph.initializer}
