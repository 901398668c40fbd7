#!/usr/bin/env bash
# GPU benchmark, one prepared script: (1) numerical check (benchmarks/gpu_check.py: ce, mask2, MICE-l2+2 and ColBERT
# with the same random MiniLM-L12-shaped weights on the GPU in fp32 and bf16 against CPU fp32: max |diff| and ties),
# (2) the speed goals in fp32 and bf16 (MiniLM-L12 shape, then Ettin-17M/32M in bf16), (3) the cross-encoder's
# absolute bf16 throughput. Everything ends up in ONE JSON, gpu-<name>-<stamp>.json (steps with their exit status,
# nvidia-smi, the check and every latency run), next to a text log of the same run.
# Needs only a CUDA torch and this package (random weights built in code, nothing downloaded). Each step gets what
# is left of a 450 s budget, so the whole script ends within about 8 minutes even if a step hangs.
# Usage (on a CUDA machine, from the repository root, after `make install TORCH_SPEC=...` with a CUDA torch):
#   bash benchmarks/gpu.sh [output-folder]
#   FULL_SMOKE=1 bash benchmarks/gpu.sh   # + the --full plan at toy scale on the GPU (about 5 more minutes)
set -uo pipefail
out="${1:-benchmarks/results}"
mkdir -p "$out"
python=${PYTHON:-.venv/bin/python}
gpu=$($python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))") || {
  echo "no CUDA device visible to $python" >&2
  exit 1
}
stamp=$(date +%Y%m%d-%H%M%S)
log="$out/gpu-$gpu-$stamp.txt"
json="$out/gpu-$gpu-$stamp.json"
work=$(mktemp -d "${TMPDIR:-/tmp}/micebench-gpu-XXXXXX")
trap 'rm -rf "$work" "$work-smoke"' EXIT
deadline=$((SECONDS + 450))

# step NAME COMMAND...: run with what is left of the budget, record (name, exit status, seconds) in steps.tsv
step() {
  local name=$1 left=$((deadline - SECONDS)) start=$SECONDS code=0
  shift
  echo "== $name (at most ${left}s)"
  if ((left > 5)); then
    timeout --kill-after 10 "$left" "$@" || code=$?
  else
    code=124
  fi
  printf '%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - start))" >>"$work/steps.tsv"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  step check $python benchmarks/gpu_check.py --device cuda --arch minilm-l12 --output "$work/check.json"
  for dtype in fp32 bf16; do
    step "goals-$dtype-minilm-l12" $python benchmarks/latency_ratios.py --device cuda --dtype "$dtype" --repeats 30 \
      --warmup 10 --output "$work/goals-$dtype-minilm-l12"
  done
  # the same ratios on the paper's ModernBERT backbones (random weights from the Ettin presets), bf16
  for arch in ettin-17m ettin-32m; do
    step "goals-bf16-$arch" $python benchmarks/latency_ratios.py --device cuda --dtype bf16 --arch "$arch" \
      --repeats 30 --warmup 10 --output "$work/goals-bf16-$arch"
  done
  # absolute throughput of the cross-encoder alone, bf16, (query, 512-token passage) pairs per second
  step ce-bf16-throughput $python -m micebench latency --device cuda --dtype bf16 --models ce --batch 512 \
    --doc-len 512 --query-len 32 --repeats 30 --warmup 10 --output "$work/ce-bf16-throughput" \
    --name "ce-bf16-throughput-$stamp"
  # FULL_SMOKE=1: the `paper_mini.py --full` plan's own commands at toy scale (benchmarks/full_smoke.py fixtures,
  # tiny models) with the same --device and --dtype handling as the steps above; its own 300 s, after the budget
  if [[ "${FULL_SMOKE:-0}" == 1 ]]; then
    deadline=$((SECONDS + 300))
    step full-smoke-bf16 $python benchmarks/paper_mini.py --full --smoke --device cuda --dtype bf16 \
      --checkpoints "$work-smoke/ck" --results "$work-smoke/res"
    cp "$work-smoke/res/step-times.tsv" "$out/full-smoke-$gpu-$stamp-step-times.tsv" 2>/dev/null || true
  fi
  $python benchmarks/gpu_check.py --merge "$work" --output "$json"
  cat "$work/steps.tsv"
} 2>&1 | tee "$log"
if [[ ! -s "$json" ]]; then
  echo "no JSON was written (log: $log)" >&2
  exit 1
fi
failed=$(awk -F'\t' '$2 != 0 {print $1}' "$work/steps.tsv" | paste -sd' ' -)
echo "written to $json (log: $log)${failed:+; failed steps: $failed}"
[[ -z "$failed" ]]
