#!/usr/bin/env python
"""Per-part Grad-CAM figures (Fig. 8 and Fig. 9 of the paper): the command line of
:mod:`mpn_plugin.visualization.gradcam_report`."""
from mpn_plugin.visualization.gradcam_report import main

if __name__ == "__main__":
    main()
