#!/usr/bin/env python
"""How far the test-time BN statistics of MPN's heads are from the main task's own (Sec. 4):
the command line of :mod:`mpn_plugin.benchmarks.bn_statistics_gap` (``--help``)."""
from mpn_plugin.benchmarks.bn_statistics_gap import main

if __name__ == "__main__":
    main()
