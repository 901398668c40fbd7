#!/usr/bin/env bash
# GPU benchmark: the speed goals in fp32 and bf16 (MiniLM-L12 shape, then Ettin-17M/32M in bf16), plus the
# cross-encoder's absolute bf16 throughput.
# Usage (on a CUDA machine, from the repository root, after `make install TORCH_SPEC=...` with a CUDA torch):
#   bash benchmarks/gpu.sh [output-folder]
set -euo pipefail
out="${1:-benchmarks/results}"
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
gpu=$($python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))")
stamp=$(date +%Y%m%d-%H%M%S)
log="$out/gpu-$gpu-$stamp.txt"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  for dtype in fp32 bf16; do
    $python benchmarks/latency_ratios.py --device cuda --dtype "$dtype" --repeats 30 --warmup 10 --output "$out"
  done
  # the same ratios on the paper's ModernBERT backbones (random weights from the Ettin presets), bf16
  for arch in ettin-17m ettin-32m; do
    $python benchmarks/latency_ratios.py --device cuda --dtype bf16 --arch "$arch" --repeats 30 --warmup 10 \
      --output "$out"
  done
  # absolute throughput of the cross-encoder alone, bf16, (query, 512-token passage) pairs per second
  $python -m micebench latency --device cuda --dtype bf16 --models ce --batch 512 --doc-len 512 --query-len 32 \
    --repeats 30 --warmup 10 --output "$out" --name "ce-bf16-throughput-$stamp"
} 2>&1 | tee "$log"
echo "written to $log"
