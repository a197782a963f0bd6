#!/usr/bin/env python
"""Generate the embedded synthetic pedestrian dataset (Market-1501 layout): the command line of
:mod:`mpn_plugin.cli.make_synthetic_dataset`."""
from mpn_plugin.cli.make_synthetic_dataset import main

if __name__ == "__main__":
    main()
