#!/usr/bin/env bash
# The byte-identity set: 12 commands whose run files must not change under a refactor (BM25 and dense on SciFact
# and TREC DL 2019; ce, mask2, an untrained MICE-l2+2 and ColBERT from all-MiniLM-L6-v2 on the TREC DL 2019 BM25
# top-20; MICE and ColBERT candidate stores on CISI and runs from them).
#   bash benchmarks/identity_set.sh OUT          # run the set into OUT
#   bash benchmarks/identity_set.sh --compare A B  # cmp every run.trec of A with B's
set -euo pipefail
if [[ "${1:-}" == "--compare" ]]; then
  a=$2; b=$3; status=0; n=0
  while IFS= read -r file; do
    n=$((n + 1))
    if cmp -s "$a/$file" "$b/$file"; then echo "identical  $file"; else echo "DIFFERENT  $file"; status=1; fi
  done < <(cd "$a" && find . -name run.trec | sort)
  echo "$n run files compared"; exit $status
fi
OUT=${1:?usage: identity_set.sh OUT | --compare A B}
MB=${MICEBENCH:-.venv/bin/micebench}
R="$OUT/results"
$MB run --model bm25 --dataset scifact --first-stage bm25 --top-k 1000 -o "$R" --overwrite
$MB run --model dense --dataset scifact --first-stage full --top-k 1000 -o "$R" --overwrite
$MB run --model bm25 --dataset trec-dl-19 -o "$R" --overwrite
$MB run --model dense --dataset trec-dl-19 -o "$R" --overwrite
for model in ce mask2; do
  $MB run --model $model --checkpoint minilm-l6 --untrained --dataset trec-dl-19 --top-k 20 -o "$R" --overwrite
done
$MB run --model mice-l2+2 --checkpoint minilm-l6 --untrained --dataset trec-dl-19 --top-k 20 -o "$R" --overwrite
$MB run --model colbert --checkpoint minilm-l6 --dataset trec-dl-19 --top-k 20 -o "$R" --overwrite
$MB precompute --model mice --checkpoint minilm-l6 --merge-layer 2 --top-layers 2 --dataset cisi --mode states \
  -o "$OUT/stores/mice-cisi" --overwrite
$MB run --model mice-l2+2 --checkpoint minilm-l6 --untrained --precomputed "$OUT/stores/mice-cisi" --dataset cisi \
  --name mice-l2+2-stored -o "$R" --overwrite
$MB precompute --model colbert --checkpoint minilm-l6 --dataset cisi -o "$OUT/stores/colbert-cisi" --overwrite
$MB run --model colbert --checkpoint minilm-l6 --precomputed "$OUT/stores/colbert-cisi" --dataset cisi \
  --name colbert-stored -o "$R" --overwrite
