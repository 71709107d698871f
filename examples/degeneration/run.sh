#!/usr/bin/env bash
# The DharmaOCR experiment with dpominer on a CPU: mine SmolLM2-135M-Instruct's own repetition loops
# on page-shaped transcription documents (1-4 paragraphs with line breaks and lists), train them away
# with DPO (LoRA), and measure on documents it never saw both the degeneration rate and the omission
# rate / coverage (a model that stops early instead of looping must show it).
#
#   bash examples/degeneration/run.sh                 # the full run (README numbers)
#   MINING=60 HELDOUT=40 bash examples/degeneration/run.sh   # the smaller one `make demo` runs
#
# Every knob is an environment variable; the defaults are the settings behind the README table.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-runs/degeneration}
MODEL=${MODEL:-smollm2-135m-instruct}
MINING=${MINING:-269}          # mining documents used (of 686)
HELDOUT=${HELDOUT:-101}        # held-out documents used (of 296); never mined
N=${N:-3}                      # candidates per mining document
TEMP=${TEMP:-0.5}              # mining temperature (SmolLM2 loops most at low temperature)
MAX_TOKENS=${MAX_TOKENS:-384}
PAIRS_PER_DOC=${PAIRS_PER_DOC:-2}
LR=${LR:-2e-4}
BETA=${BETA:-0.1}
SFT=${SFT:-0.2}                # NLL on the chosen side, against likelihood displacement
LENGTH_PENALTY=${LENGTH_PENALTY:-0}   # R-DPO alpha (train --length-penalty)
REJECTED_LOOP_COPIES=${REJECTED_LOOP_COPIES:-}  # cut rejected loops to onset + K copies (empty: whole)
EPOCHS=${EPOCHS:-1}
BATCH=${BATCH:-4}

source "$HERE/../common.sh"
start_run
take_documents

step "1/6 sample: $MINING documents × $N candidates, T=$TEMP, stop on loops"
dpominer sample "$OUT/mining.jsonl" -o "$OUT/candidates.jsonl" -m "$MODEL" -n "$N" -t "$TEMP" \
  --max-tokens "$MAX_TOKENS" --stop-on-loop --seed 0
step "2/6 score: loops and CER"
dpominer score "$OUT/candidates.jsonl" -o "$OUT/scored.jsonl"
step "3/6 pair: loops and early stops rejected, the best complete candidate (or the reference) chosen"
dpominer pair "$OUT/scored.jsonl" -o "$OUT/pairs.jsonl" --no-reject-worse --max-pairs-per-doc "$PAIRS_PER_DOC"
step "4/6 train: DPO with LoRA, merged"
# --tokenize-separately: some pages open with an indented code block, and the template's newline merges with
# those spaces into one token; prompt and completion are tokenised apart, as they were sampled
dpominer train "$OUT/pairs.jsonl" -o "$OUT/dpo" -m "$MODEL" --lora --merge --lr "$LR" --beta "$BETA" \
  --sft-weight "$SFT" --length-penalty "$LENGTH_PENALTY" ${REJECTED_LOOP_COPIES:+--rejected-loop-copies "$REJECTED_LOOP_COPIES"} \
  --epochs "$EPOCHS" --batch-size "$BATCH" --max-length 768 --save-every 0 --seed 0 --tokenize-separately
step "5/6 eval: greedy on the $HELDOUT held-out documents, before vs after"
dpominer eval "$OUT/heldout.jsonl" -o "$OUT/eval" -m "$MODEL" -m "$OUT/dpo" --max-tokens "$MAX_TOKENS" --seed 0
finish_run
