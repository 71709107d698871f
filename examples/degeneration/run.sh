#!/usr/bin/env bash
# The DharmaOCR experiment with dpominer on a CPU: mine SmolLM2-135M-Instruct's own repetition loops
# on page-shaped transcription documents (1-4 paragraphs with line breaks and lists), train them away
# with DPO (LoRA), and measure on documents it never saw both the degeneration rate and the omission
# rate / coverage (a model that stops early instead of looping must show it).
#
#   MINING=64 HELDOUT=60 ROUNDS=2 bash examples/degeneration/run.sh   # the run behind the README numbers
#   MINING=60 HELDOUT=40 bash examples/degeneration/run.sh            # the smaller one `make demo` runs
#
# ROUNDS=2 mines again with the trained model and trains it on its own new failures (the round-1
# model is then the policy and the reference): a model that has learned to copy the whole page fails
# differently (it copies the page, then starts it over), and only its own samples show that.
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
ROUNDS=${ROUNDS:-1}           # mine → pair → train rounds, each on the previous round's model

source "$HERE/../common.sh"
start_run
rm -rf "$OUT"/round* "$OUT"/dpo-round*  # the later rounds of an earlier run
take_documents

policy=$MODEL
models=(-m "$MODEL")
for round in $(seq 1 "$ROUNDS"); do
  dir=$OUT; [ "$round" -gt 1 ] && dir=$OUT/round$round && mkdir -p "$dir"
  step "1/6 sample (round $round/$ROUNDS, $policy): $MINING documents × $N candidates, T=$TEMP, stop on loops"
  dpominer sample "$OUT/mining.jsonl" -o "$dir/candidates.jsonl" -m "$policy" -n "$N" -t "$TEMP" \
    --max-tokens "$MAX_TOKENS" --stop-on-loop --seed 0
  step "2/6 score: loops and CER"
  dpominer score "$dir/candidates.jsonl" -o "$dir/scored.jsonl"
  step "3/6 pair: loops and early stops rejected, the best complete candidate (or the reference) chosen"
  dpominer pair "$dir/scored.jsonl" -o "$dir/pairs.jsonl" --no-reject-worse --max-pairs-per-doc "$PAIRS_PER_DOC"
  step "4/6 train: DPO with LoRA, merged"
  # --tokenize-separately: some pages open with an indented code block, and the template's newline merges with
  # those spaces into one token; prompt and completion are tokenised apart, as they were sampled
  trained=$OUT/dpo; [ "$round" -gt 1 ] && trained=$OUT/dpo-round$round
  dpominer train "$dir/pairs.jsonl" -o "$trained" -m "$policy" --lora --merge --lr "$LR" --beta "$BETA" \
    --sft-weight "$SFT" --length-penalty "$LENGTH_PENALTY" ${REJECTED_LOOP_COPIES:+--rejected-loop-copies "$REJECTED_LOOP_COPIES"} \
    --epochs "$EPOCHS" --batch-size "$BATCH" --max-length 768 --save-every 0 --seed 0 --tokenize-separately
  policy=$trained
  models+=(-m "$policy")
done
step "5/6 eval: greedy on the $HELDOUT held-out documents, base vs each round's model"
dpominer eval "$OUT/heldout.jsonl" -o "$OUT/eval" "${models[@]}" --max-tokens "$MAX_TOKENS" --seed 0
finish_run
