#!/usr/bin/env python
"""Train and evaluate MPN (or a torchreid baseline) with torchreid: the command line of
:mod:`mpn_plugin.train` (also installed as ``mpn-train``)."""
from mpn_plugin.train import main

if __name__ == "__main__":
    main()
