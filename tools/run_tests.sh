#!/usr/bin/env bash
# The README's test command: set everything up from scratch (idempotent) and run the tests.
#   bash tools/run_tests.sh [pytest args]
# Also creates the separate mediapipe environment of the prior generator. Where mediapipe
# 0.10.21 has wheels (Linux x86-64, Python 3.9-3.12) a failure to create it stops here with
# the reason (MPN_ALLOW_NO_MEDIAPIPE=1 goes on without it, outside CI); elsewhere its tests
# skip, with the reason shown. Everything installed here is required by the tests
# (MPN_TESTS_REQUIRE): a test that would skip for want of it fails instead. The linter (ruff,
# configured in pyproject.toml) runs first: a finding fails the command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
require="mobilenetv2_weights"
if "$PYTHON" -c 'import platform, sys; sys.exit(not (platform.system() == "Linux" and
    platform.machine() in ("x86_64", "AMD64") and (3, 9) <= sys.version_info[:2] <= (3, 12)))'; then
  mediapipe_log=$(mktemp)
  if bash third_party/mediapipe_env.sh >"$mediapipe_log" 2>&1; then
    cat "$mediapipe_log"
    require="$require,mediapipe_env"
  else
    echo "[tests] the mediapipe env (third_party/mediapipe_env.sh) failed on this platform, where"
    echo "[tests] mediapipe 0.10.21 has wheels; its output:"
    sed 's/^/    /' "$mediapipe_log"
    if [ "${CI:-}" = "true" ] || [ "${MPN_ALLOW_NO_MEDIAPIPE:-}" != "1" ]; then
      echo "[tests] stopping (outside CI, MPN_ALLOW_NO_MEDIAPIPE=1 runs the tests without it)"
      rm -f "$mediapipe_log"
      exit 1
    fi
    echo "[tests] MPN_ALLOW_NO_MEDIAPIPE=1: going on; the mediapipe tests will skip"
  fi
  rm -f "$mediapipe_log"
else
  echo "[tests] no mediapipe 0.10.21 wheel for $("$PYTHON" -c 'import platform, sys; print(platform.system(), platform.machine(), "Python", sys.version.split()[0])'): the mediapipe tests will skip"
fi
export MPN_TESTS_REQUIRE="$require"
.venv/bin/python -m ruff check .
exec .venv/bin/python -m pytest -q "$@"
