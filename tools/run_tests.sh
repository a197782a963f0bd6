#!/usr/bin/env bash
# The README's test command: set everything up from scratch (idempotent) and run the tests.
#   bash tools/run_tests.sh [pytest args]
# Also creates the separate mediapipe environment of the prior generator (its tests skip when
# it cannot be created, e.g. on a platform mediapipe 0.10.21 has no wheel for).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
bash third_party/mediapipe_env.sh || echo "[tests] mediapipe env unavailable: its tests will skip"
exec .venv/bin/python -m pytest -q "$@"
