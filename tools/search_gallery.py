#!/usr/bin/env python
"""Build a faiss gallery index from feature shards, and search it (top-k with scores): the command
line of :mod:`mpn_plugin.inference.search` (also installed as ``mpn-search``)."""
from mpn_plugin.inference.search import main

if __name__ == "__main__":
    main()
