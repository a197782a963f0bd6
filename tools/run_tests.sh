#!/usr/bin/env bash
# The README's test command: set everything up from scratch (idempotent) and run the tests.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
