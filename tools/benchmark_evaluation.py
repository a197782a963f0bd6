#!/usr/bin/env python
"""Evaluation cost: our vectorised, chunked CMC/mAP vs torchreid's Python fallback: the command
line of :mod:`mpn_plugin.evaluation.benchmark`."""
from mpn_plugin.evaluation.benchmark import main

if __name__ == "__main__":
    main()
