#!/usr/bin/env python
"""Turn a folder of your own pedestrian crops into a dataset torchreid (and MPN) can train on: the
command line of :mod:`mpn_plugin.cli.prepare_dataset` (also installed as ``mpn-prepare``)."""
from mpn_plugin.cli.prepare_dataset import main

if __name__ == "__main__":
    main()
