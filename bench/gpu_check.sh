#!/usr/bin/env bash
# The GPU check, as one prepared command for a machine with an NVIDIA GPU (under 10 minutes on an
# H100/H200): bench/gpu_check.py at 832x480x81, results in $OUT (or bench/results). Run from a
# checkout whose venv has framebus installed (`make setup`); on the CPU it runs reduced.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu (reduced run)', torch.__version__)"
exec timeout 600 "$python" -m bench.gpu_check --out "${OUT:-bench/results}" "$@"
