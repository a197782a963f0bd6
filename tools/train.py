#!/usr/bin/env python
"""Train and evaluate MPN (or a torchreid baseline) with torchreid: the ``scripts/main.py``
workflow with an engine registry.

Examples::

    python tools/train.py --config-file configs/mpn_synthetic.yaml
    python tools/train.py --config-file configs/pcb_p6_synthetic.yaml
    python tools/train.py --config-file configs/mpn_market1501.yaml --root /data \
        test.evaluate True model.load_weights log/mpn_market1501/model/model.pth.tar-70 \
        test.visrank True
    # config overrides after -s/-t: end the dataset list with --
    python tools/train.py --config-file configs/mpn_synthetic.yaml -t synthetic_pedestrians \
        -- train.max_epoch 1
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mpn_plugin.train import main  # noqa: E402

if __name__ == "__main__":
    main()
