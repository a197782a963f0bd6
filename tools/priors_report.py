#!/usr/bin/env python
"""A quality report of a prior cache: Markdown + PNG figures + a CSV of the fallback images: the
command line of :mod:`mpn_plugin.priors.report`."""
from mpn_plugin.priors.report import main

if __name__ == "__main__":
    main()
