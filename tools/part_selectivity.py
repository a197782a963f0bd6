#!/usr/bin/env python
"""Part selectivity of the main tasks of trained MPN models (Sec. 3.1, 3.3): the command
line of :mod:`mpn_plugin.cli.part_selectivity`."""
from mpn_plugin.cli.part_selectivity import main

if __name__ == "__main__":
    main()
