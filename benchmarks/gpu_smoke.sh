#!/usr/bin/env bash
# The GPU path in under 5 minutes on one CUDA GPU: tests/gpu (DrQ-v2 and every reward method
# train, save, load and score on the GPU; checkpoints move between GPU and CPU) and the
# host/device synchronisation counts per step. Output: stdout and benchmarks/results/gpu_*.
#   bash benchmarks/gpu_smoke.sh            # from the repository root, after scripts/setup.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT_DIR:-benchmarks/results}
mkdir -p "$OUT"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" || exit 2
export MUJOCO_GL="${MUJOCO_GL:-egl}"
status=0
timeout 240 "$PY" -m pytest tests/gpu -q -rA -s -p no:cacheprovider 2>&1 | tee "$OUT/gpu_smoke_tests.txt" || status=1
timeout 120 "$PY" benchmarks/gpu_sync_counts.py --json "$OUT/gpu_sync_counts.json" 2>&1 | tee "$OUT/gpu_sync_counts.txt" || status=1
exit $status
