#!/usr/bin/env python
"""Robustness sweep of trained models under controlled query perturbations: the command
line of :mod:`mpn_plugin.cli.robustness_sweep`."""
from mpn_plugin.cli.robustness_sweep import main

if __name__ == "__main__":
    main()
