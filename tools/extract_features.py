#!/usr/bin/env python
"""Features of a folder of crops (recursive) or of a manifest, into a sharded feature store: the
command line of :mod:`mpn_plugin.inference.extract` (also installed as ``mpn-extract``)."""
from mpn_plugin.inference.extract import main

if __name__ == "__main__":
    main()
