#!/usr/bin/env bash
# Set up (idempotent) and run every check CI runs: lint, types, then the test suite.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy robot data ros sim cli rewards policies calibration compute configs
export MUJOCO_GL="${MUJOCO_GL:-egl}"
TCMALLOC=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
[ -f "$TCMALLOC" ] && export LD_PRELOAD="$TCMALLOC${LD_PRELOAD:+:$LD_PRELOAD}"
exec .venv/bin/python -m pytest "$@"
