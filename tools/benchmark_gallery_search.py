#!/usr/bin/env python
"""Benchmark faiss gallery search at 10^4 - 10^6 vectors: the command line of
:mod:`mpn_plugin.inference.benchmark_search`."""
from mpn_plugin.inference.benchmark_search import main

if __name__ == "__main__":
    main()
