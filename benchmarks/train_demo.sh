#!/usr/bin/env bash
# Offline training recipe on SciFact (CPU, < 60 minutes on 2 cores; `--full` = larger settings for a GPU):
#   1. fine-tune a cross-encoder from the packaged all-MiniLM-L6-v2 on SciFact train qrels, BM25 hard negatives,
#      with Margin-MSE from an ensemble teacher: BM25 + the zero-shot dense model (per-query z-scores summed);
#   2. distil MICE-l2+2 from it with Margin-MSE (teacher = that cross-encoder), initialised from it;
#   3. re-rank the SciFact test BM25 top-k with both (MICE from its precomputed store, fp16 and int8), next to BM25
#      and the zero-shot dense model, and print the table.
# Usage: bash benchmarks/train_demo.sh [--full]   (needs the local mirror: MICEBENCH_DATA or ../shared/data)
set -euo pipefail
MB=${MICEBENCH:-.venv/bin/micebench}
OUT=${TRAIN_DEMO_OUT:-checkpoints/train-demo}
RES=${TRAIN_DEMO_RESULTS:-results/train-demo}
DEVICE=${DEVICE:-auto}
# CE: Margin-MSE on (query, positive, BM25 negative) triples, 8 per step; 256 tokens for training and re-ranking
# (SciFact abstracts are long: with 160 or 192 tokens the evidence is often cut off).
CE_STEPS=600; MICE_STEPS=400; BATCH=8; MAXLEN=256; TOPK=20; NEG=8
if [[ "${1:-}" == "--full" ]]; then
  CE_STEPS=5000; MICE_STEPS=5000; BATCH=32; MAXLEN=512; TOPK=100; NEG=20
fi
mkdir -p "$OUT" "$RES"
times="$RES/step-times.tsv"; : > "$times"
step() { local name=$1; shift; local t0=$SECONDS; "$@"; echo -e "$name\t$((SECONDS - t0))" >> "$times"; }

step "1 train ce (margin-mse from bm25+dense, ${CE_STEPS} steps)" \
  $MB train --model ce --init minilm-l6 --train scifact --split train --teacher bm25,dense --loss margin-mse \
    --steps $CE_STEPS --batch-size $BATCH --lr 1e-4 --warmup 50 --max-length $MAXLEN --negatives 20 \
    --every 200 --device $DEVICE -o "$OUT/ce" --seed 12
step "2 distil mice-l2+2 (margin-mse, ${MICE_STEPS} steps)" \
  $MB train --model mice-l2+2 --init "$OUT/ce/best" --train scifact --split train --teacher "ce:$OUT/ce/best" \
    --loss margin-mse --steps $MICE_STEPS --batch-size $BATCH --lr 1e-4 --warmup $((MICE_STEPS / 10)) \
    --max-length $MAXLEN --negatives $NEG --every 100 --device $DEVICE -o "$OUT/mice-l2+2" --seed 12
step "3a bm25" $MB run --model bm25 --dataset scifact --top-k $TOPK -o "$RES" --overwrite
step "3b dense zero-shot" $MB run --model dense --dataset scifact --top-k $TOPK -o "$RES" --overwrite --device $DEVICE
step "3c ce (fine-tuned)" $MB run --model ce --checkpoint "$OUT/ce/best" --name ce-finetuned --dataset scifact \
  --top-k $TOPK --max-length $MAXLEN -o "$RES" --overwrite --device $DEVICE
step "3d precompute mice store" $MB precompute --model mice --checkpoint "$OUT/mice-l2+2/best" --dataset scifact \
  --mode states --dtype fp16 -o "$OUT/mice-l2+2-store" --overwrite --device $DEVICE
step "3e mice-l2+2 (distilled, stored)" $MB run --model mice --checkpoint "$OUT/mice-l2+2/best" \
  --precomputed "$OUT/mice-l2+2-store" --name mice-l2+2-distilled --dataset scifact --top-k $TOPK -o "$RES" \
  --overwrite --device $DEVICE
step "3f precompute mice store (int8)" $MB precompute --model mice --checkpoint "$OUT/mice-l2+2/best" \
  --dataset scifact --mode states --dtype int8 -o "$OUT/mice-l2+2-store-int8" --overwrite --device $DEVICE
step "3g mice-l2+2 (distilled, int8 store)" $MB run --model mice --checkpoint "$OUT/mice-l2+2/best" \
  --precomputed "$OUT/mice-l2+2-store-int8" --name mice-l2+2-distilled-int8 --dataset scifact --top-k $TOPK \
  -o "$RES" --overwrite --device $DEVICE
$MB report --results "$RES" --baseline ce-finetuned --format md --format csv
echo "re-ranked the SciFact test BM25 top-$TOPK; wall-clock seconds per step:"
column -t -s $'\t' "$times"
