#!/usr/bin/env bash
# Create the separate environment of the built-in offline prior generator (mediapipe 0.10.21,
# the last release that ships its models in the wheel; it pins numpy<2 and protobuf<5, so it
# must not share the training environment). No torch is needed there: mpn-reid itself is
# installed without its dependencies, so that tools/generate_priors.py imports the torch-free
# mpn_plugin.priors (importing mpn_plugin registers nothing without torch/torchreid).
#   bash third_party/mediapipe_env.sh          # -> .venv-mediapipe
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${MEDIAPIPE_VENV:-.venv-mediapipe}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip --disable-pip-version-check -q install "mediapipe==0.10.21" \
  "numpy<2" opencv-python-headless tqdm pillow pytest 2>&1 | grep -v "WARNING: Location" || true
"$VENV/bin/python" -m pip --disable-pip-version-check -q install --no-deps -e . 2>&1 \
  | grep -v "WARNING: Location" || true
"$VENV/bin/python" -c "import mediapipe as mp, mpn_plugin.cli.generate_priors; print('[mediapipe env] ok: mediapipe', mp.__version__)"
