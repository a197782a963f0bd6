"""What this Python environment can import, found without importing it (torch-free).

The package's face registers with torchreid only where torch and torchreid are installed, and
the prior generator, which also runs in the MediaPipe environment without torch
(``third_party/mediapipe_env.sh``), reads the same fact from here.

Examples::

    >>> from mpn_plugin.environment import TORCH_AVAILABLE
"""
import importlib.util

#: Whether torch and torchreid can be imported (found without importing them).
TORCH_AVAILABLE = all(importlib.util.find_spec(name) is not None for name in ("torch", "torchreid"))
