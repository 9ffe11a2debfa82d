#!/usr/bin/env bash
# One command for the GPU path: the gpu-marked tests = a CUDA build with AMP + channels-last through every
# stage, torch.compile and the autotuned defaults on CUDA, and DDP over NCCL on every GPU present.
# Prints nvidia-smi's view first so the log says what it ran on.
#   bash scripts/gpu-check.sh              installs like `make test` (.venv), then runs the tests
#   PYTHON=python3 bash scripts/gpu-check.sh   no install: that python already holds torch with CUDA (a machine
#                                          with no registry; put missing packages on PYTHONPATH first)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the CLI runs from temp folders in the tests
else
  make install
  PYTHON=.venv/bin/python
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "error: no CUDA device (nvidia-smi failed)"; exit 1; }
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.device_count(), 'GPU(s)')"
EDGEPIPE_PROGRESS=0 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu tests/gpu "$@"
