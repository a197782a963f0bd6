#!/usr/bin/env bash
# The README's main command: set everything up (idempotent), generate the embedded synthetic
# pedestrian dataset and its coarse priors, train MPN on CPU and print torchreid's Rank-1/mAP.
#   bash tools/run_demo.sh [extra config overrides, e.g. train.max_epoch 5]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash tools/setup_env.sh
PY=.venv/bin/python
ROOT=${ROOT:-data}
$PY tools/make_synthetic_dataset.py --root "$ROOT"
$PY tools/generate_priors.py --dataset synthetic_pedestrians --root "$ROOT" --adapter synthetic --height 128 --width 64
# the offline ImageNet MobileNetV2 trunk: 64.1% mAP in 7 min of training, against 32.1% for
# ResNet-18 from scratch (configs/mpn_synthetic.yaml, the ablations' base) at the same budget
$PY tools/train.py --config-file configs/mpn_synthetic_mobilenetv2.yaml --root "$ROOT" "$@"
echo "[demo] total wall time: $(( $(date +%s) - start )) s"
