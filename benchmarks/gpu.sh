#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a CUDA GPU: the GPU tests (tests/test_gpu.py) and
# the GPU benchmarks (benchmarks/gpu.py; benchmarks/throughput.py: resnet50, batch 64, 2,000 images),
# everything printed and written to one file.
#   benchmarks/gpu.sh [results-file]        default: benchmarks/gpu-results.txt
# Uses the repo's .venv when there is one, else $PYTHON or python3 with the project installed;
# it installs nothing: a missing package is named and the script stops (machines without
# internet access cannot fetch one). About ten minutes on one GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu-results.txt}
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=${PYTHON:-python3}; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # this checkout, even if another is installed
missing=$("$PY" - <<'PYCODE'
import importlib.util
need = ["torch", "torchvision", "hydra", "omegaconf", "pytorch_grad_cam", "torchinfo", "jinja2", "pytest", "tensorboardX"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
PYCODE
)
if [ -n "$missing" ]; then
  echo "gpu.sh: $PY lacks: $missing; install the project first (pip install -e '.[dev]')" >&2
  exit 2
fi
{
  echo "# vizpipe GPU checks, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  echo "## tests/test_gpu.py"
  timeout 600 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs tests/test_gpu.py 2>&1 | tail -25
  echo "## benchmarks/gpu.py (batch 32)"
  timeout 600 "$PY" -m benchmarks.gpu --device cuda --batch 32 --repeats 5 2>&1 | tail -20
  echo "## benchmarks/throughput.py (resnet50, batch 64, 2,000 images, issue 25)"
  timeout 1200 "$PY" -m benchmarks.throughput --device cuda --model resnet50 --batch 64 \
    --threads "$(nproc 2>/dev/null || echo 4)" 2>&1 | tail -25
} 2>&1 | tee "$OUT"
echo "gpu.sh: results in $OUT"
