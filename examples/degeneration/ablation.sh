#!/usr/bin/env bash
# What each remedy against length bias does, on the same pairs (issue 12): after `run.sh` has mined
# $OUT/pairs.jsonl and sampled the base model on $OUT/heldout.jsonl, train one variant per line below
# (each changes one setting of the default recipe), sample each greedily on the held-out documents, and
# print one table: degeneration, omission, coverage, each with its change against the base model.
#
#   bash examples/degeneration/run.sh && bash examples/degeneration/ablation.sh
#   VARIANTS="sft0 whole" bash examples/degeneration/ablation.sh     # a subset
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-runs/degeneration}
MODEL=${MODEL:-smollm2-135m-instruct}
MAX_TOKENS=${MAX_TOKENS:-384}
COMMON=(--lora --merge --lr "${LR:-2e-4}" --beta "${BETA:-0.1}" --epochs 1 --batch-size 4 --max-length 768
        --save-every 0 --seed 0 --tokenize-separately)  # pages that open indented: see run.sh
declare -A FLAGS=(
  [default]="--sft-weight 0.2"                                   # the recipe: loops cut to onset + 3 copies
  [sft0]="--sft-weight 0"                                        # no NLL on the chosen side
  [sft1]="--sft-weight 1.0"                                      # RPO's weight
  [whole]="--sft-weight 0.2 --rejected-loop-copies 0"            # rejected loops kept whole
  [lpneg]="--sft-weight 0.2 --length-penalty -0.005"             # R-DPO, the sign that discounts length here
  [lppos]="--sft-weight 0.2 --length-penalty 0.005"              # R-DPO, the paper's sign
)
VARIANTS=${VARIANTS:-default sft0 sft1 whole lpneg lppos}
[ -f "$OUT/pairs.jsonl" ] || { echo "no $OUT/pairs.jsonl: run examples/degeneration/run.sh first" >&2; exit 1; }
mkdir -p "$OUT/ablation"
base="$OUT/ablation/base.candidates.jsonl"
[ -f "$base" ] || cp "$OUT/eval/$(basename "$MODEL").candidates.jsonl" "$base" 2>/dev/null || \
  dpominer sample "$OUT/heldout.jsonl" -o "$base" -m "$MODEL" -n 1 -t 0 --max-tokens "$MAX_TOKENS" --seed 0
files=(--candidates "$base")
for name in $VARIANTS; do
  [ -n "${FLAGS[$name]:-}" ] || { echo "unknown variant $name (${!FLAGS[*]})" >&2; exit 1; }
  if [ ! -f "$OUT/ablation/$name.candidates.jsonl" ]; then
    rm -rf "$OUT/ablation/$name"
    # shellcheck disable=SC2086
    dpominer train "$OUT/pairs.jsonl" -o "$OUT/ablation/$name" -m "$MODEL" "${COMMON[@]}" ${FLAGS[$name]}
    dpominer sample "$OUT/heldout.jsonl" -o "$OUT/ablation/$name.candidates.jsonl" -m "$OUT/ablation/$name" \
      -n 1 -t 0 --max-tokens "$MAX_TOKENS" --seed 0
  fi
  files+=(--candidates "$OUT/ablation/$name.candidates.jsonl")
done
dpominer eval -o "$OUT/ablation/eval" "${files[@]}"
python "$HERE/table.py" "$OUT/ablation/eval/eval.json"
