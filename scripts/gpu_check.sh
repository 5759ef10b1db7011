#!/usr/bin/env bash
# The GPU checks, as one short script for a machine with CUDA (and torch already installed there):
#   1. the gpu-marked tests: tests/attribution/test_oracle.py's graph-vs-oracle matrix with the
#      engine on CUDA, every tensor on the device, interventions/generation equal to the CPU engine;
#   2. a short dtype/device bench (bench/dtype_device.py): attribute() time and weight memory per
#      (device, weight dtype, compute dtype), and each graph's distance to the float32 CPU graph.
# Usage: scripts/gpu_check.sh            (about 2-4 minutes on one GPU)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false
python - <<'PY'
import torch
assert torch.cuda.is_available(), "scripts/gpu_check.sh needs CUDA: torch.cuda.is_available() is false here"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
python -m pytest -q -m gpu tests/models/test_gpu.py
python bench/dtype_device.py --devices cpu cuda
