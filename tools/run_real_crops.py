#!/usr/bin/env python
"""MPN vs its Baseline vs a softmax model on real crops, and probe lists: the command line of
:mod:`mpn_plugin.experiments.real_crops` (also installed as ``mpn-experiments real-crops``)."""
from mpn_plugin.experiments.real_crops import main

if __name__ == "__main__":
    main()
