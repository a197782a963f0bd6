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


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else :func:`platform.processor`."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(use_gpu: bool) -> str:
    """The machine a run's numbers come from, as written into its ``results.json``: the GPU's
    name when ``use_gpu``, else the CPU model and the number of logical CPUs.

    Examples::

        >>> device_name(False)
        'AMD EPYC 7B13 (2 logical CPUs)'
    """
    import os
    if use_gpu:
        import torch
        return f"{torch.cuda.get_device_name(0)} (GPU), {cpu_model()} host"
    return f"{cpu_model()} ({os.cpu_count()} logical CPUs)"
