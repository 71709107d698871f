# Sourced by examples/*/run.sh once the script has set its knobs (HERE, OUT; MINING and HELDOUT for
# take_documents): what every example run does the same way.

# Fresh outputs (this script's own outputs of an earlier run are redone), and the clock.
start_run() {
  mkdir -p "$OUT"
  rm -rf "$OUT/dpo" "$OUT/eval"
  start=$(date +%s)
}

# The first $MINING mining and $HELDOUT held-out documents of the example's own files.
take_documents() {
  head -n "$MINING" "$HERE/mining.jsonl" > "$OUT/mining.jsonl"
  head -n "$HELDOUT" "$HERE/heldout.jsonl" > "$OUT/heldout.jsonl"
}

# A banner with the seconds since start_run.
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

# The report of the whole run and the example's before/after table (its table.py).
finish_run() {
  step "6/6 report"
  dpominer report "$OUT/scored.jsonl" "$OUT/pairs.jsonl" "$OUT/dpo" "$OUT/eval" -o "$OUT/report.html"
  step "done"
  python "$HERE/table.py" "$OUT/eval/eval.json"
  echo
  echo "before/after: $OUT/eval/eval.json    report: $OUT/report.html"
}
