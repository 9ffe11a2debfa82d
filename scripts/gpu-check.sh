#!/usr/bin/env bash
# One command for the GPU path (run it on any machine with CUDA; it installs what it needs like `make test`):
# the gpu-marked tests = a CUDA build with AMP + channels-last through every stage, and DDP over NCCL on
# every GPU present. Prints nvidia-smi's view first so the log says what it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "error: no CUDA device (nvidia-smi failed)"; exit 1; }
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.device_count(), 'GPU(s)')"
EDGEPIPE_PROGRESS=0 .venv/bin/python -m pytest -q -m gpu tests/gpu "$@"
