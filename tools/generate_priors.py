#!/usr/bin/env python
"""Generate the coarse priors (Sec. 3.2) of a dataset's images into one cache file: the command
line of :mod:`mpn_plugin.cli.generate_priors` (also installed as ``mpn-priors``)."""
from mpn_plugin.cli.generate_priors import main

if __name__ == "__main__":
    main()
