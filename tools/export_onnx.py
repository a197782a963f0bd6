#!/usr/bin/env python
"""Export a trained model's test-time graph (backbone + MT heads; no AT, prior or classifier) to
ONNX with a dynamic batch axis, and check it against PyTorch with onnxruntime: the command line
of :mod:`mpn_plugin.cli.export_onnx` (also installed as ``mpn-export``)."""
import sys

from mpn_plugin.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
