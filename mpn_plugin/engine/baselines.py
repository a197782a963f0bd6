"""torchreid's own softmax and triplet engines with the shared protocol of
:class:`~mpn_plugin.engine.mixins.EngineMixin` (for ``pcb_p6``, ``resnet50``, ``osnet_*``...)."""
from __future__ import annotations

from .. import compat
from .mixins import EngineMixin


class _WarmupForwardBackward:
    def forward_backward(self, data):
        self.apply_warmup()
        # torchreid's step (forward, loss, backward, step) runs whole under autocast, so it
        # uses bfloat16 on every device (float16 would need gradient scaling inside it).
        with self.autocast(self.amp_train, scaled=False):
            return super().forward_backward(data)


class SoftmaxEngine(EngineMixin, _WarmupForwardBackward, compat.engine.ImageSoftmaxEngine):
    """torchreid's ``ImageSoftmaxEngine`` (unchanged loss) with safe checkpoints, flip test,
    warm-up and optional mixed precision."""


class TripletEngine(EngineMixin, _WarmupForwardBackward, compat.engine.ImageTripletEngine):
    """torchreid's ``ImageTripletEngine`` (unchanged losses) with safe checkpoints, flip test,
    warm-up and optional mixed precision."""
