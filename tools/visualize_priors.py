#!/usr/bin/env python
"""Draw coarse priors so a person can check them by eye: the command line of
:mod:`mpn_plugin.priors.visualize`."""
from mpn_plugin.priors.visualize import main

if __name__ == "__main__":
    main()
