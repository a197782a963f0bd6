#!/usr/bin/env python
"""The paper's ablations in miniature on the synthetic benchmark: the command line of
:mod:`mpn_plugin.experiments.ablation` (also installed as ``mpn-experiments ablation``)."""
from mpn_plugin.experiments.ablation import main

if __name__ == "__main__":
    main()
