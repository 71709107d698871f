#!/usr/bin/env bash
# OCR with dpominer: page images of real text (stdlib docstrings and the UDHR's Article 1 in seven
# languages) through sample → score → pair → train → eval → report, on a vision-language model.
#
#   bash examples/ocr/run.sh                                   # a tiny random VLM on a CPU: the plumbing
#   MODEL=HuggingFaceTB/SmolVLM-256M-Instruct bash examples/ocr/run.sh   # a real one (see gpu_box.sh)
#
# Every knob is an environment variable. With the tiny random VLM the transcriptions are noise, so the
# numbers say nothing about DPO; what it shows is every stage running on page images (PNG and PDF pages).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${OUT:-runs/ocr}
MODEL=${MODEL:-}
BACKEND=${BACKEND:-hf}
ENGLISH=${ENGLISH:-24}         # docstring pages (plus 7 UDHR pages)
N=${N:-3}
TEMP=${TEMP:-0.5}
MAX_TOKENS=${MAX_TOKENS:-96}
STEPS=${STEPS:-4}

source "$HERE/../common.sh"
start_run

if [ -z "$MODEL" ]; then
  step "0/7 a tiny random LLaVA-style VLM"
  MODEL=$(python "$HERE/tiny_vlm.py" "$OUT/tiny-vlm" | tail -n 1)
fi
step "1/7 pages: render $ENGLISH docstring pages and 7 UDHR articles"
python "$HERE/make_pages.py" "$OUT/data" --english "$ENGLISH"
step "2/7 sample: $N candidates per page, T=$TEMP"
dpominer sample "$OUT/data/mining.jsonl" -o "$OUT/candidates.jsonl" -m "$MODEL" --backend "$BACKEND" \
  -n "$N" -t "$TEMP" --max-tokens "$MAX_TOKENS" --seed 0
step "3/7 score"
dpominer score "$OUT/candidates.jsonl" -o "$OUT/scored.jsonl"
step "4/7 pair"
dpominer pair "$OUT/scored.jsonl" -o "$OUT/pairs.jsonl" --max-pairs-per-doc 2
step "5/7 train: DPO with LoRA on the language model (vision tower frozen), merged"
dpominer train "$OUT/pairs.jsonl" -o "$OUT/dpo" -m "$MODEL" --lora --merge --max-steps "$STEPS" \
  --batch-size 2 --save-every 0
step "6/7 eval: before/after on held-out pages"
dpominer eval "$OUT/data/heldout.jsonl" -o "$OUT/eval" -m "$MODEL" -m "$OUT/dpo" --backend "$BACKEND" \
  --max-tokens "$MAX_TOKENS"
step "7/7 report (example pairs with their page)"
dpominer report "$OUT/scored.jsonl" "$OUT/pairs.jsonl" "$OUT/dpo" "$OUT/eval" -o "$OUT/report.html"
step "done"
