#!/usr/bin/env python
"""Model complexity side by side (Table 9 at CPU scale): the command line of
:mod:`mpn_plugin.benchmarks.complexity` (``--help`` for the options)."""
from mpn_plugin.benchmarks.complexity import main

if __name__ == "__main__":
    main()
