"""Precision/recall of the loop detector on labelled data: real SmolLM2 outputs and a synthetic set.

    python bench/calibrate.py            # the table
    python bench/calibrate.py --errors   # and every misjudged example

Positive = verdict "degenerate" (what `pair` rejects). "ambiguous" real examples are left out of P/R
and shown as a count; "suspect" is the share of all outputs the detector left undecided.
`real_smollm2.jsonl` is the set the first thresholds were tuned on; `real_smollm2_heldout.jsonl` was
labelled without looking at the detector and never tuned on. `real_smollm2_v2.jsonl` (lists, counting,
tables, forms, five other languages, raw continuations, T 0…1.2, with token log-probs) carries a
`split` per row: "tune" rows may be looked at and fitted on (bench/fit_detector.py), "heldout" rows
(a third of the documents, by a hash of the document id) never. `real_smollm2_v3.jsonl` (SmolLM2,
labelled the same way, each row in its document's split): v2's documents at T 0.7, 0.9 and 1.2; 58 new
documents (make_docs3.py: prose transcription in en/pt/es, lists, raw continuations, forms) at T 0, 0.5,
0.7 and 1.0; and the tuning documents of both at T 0.4, 0.6, 0.8 and 1.0 with seed 11 (ids "-s11-").
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import build  # noqa: E402

from dpominer.degeneration import detect  # noqa: E402

DATA = Path(__file__).parent / "data"


def load(name: str) -> list[dict]:
    path = DATA / name
    return [json.loads(line) for line in path.open()] if path.exists() else []


def tuning_rows() -> list[dict]:
    """Every row the detector may be tuned on: the first set and the v2/v3 rows marked "tune"."""
    split = load("real_smollm2_v2.jsonl") + load("real_smollm2_v3.jsonl")
    return load("real_smollm2.jsonl") + [r for r in split if r["split"] == "tune"]


def evaluate(rows: list[dict]) -> dict:
    counts: Counter = Counter()
    errors = []
    by_category: dict = defaultdict(Counter)
    for row in rows:
        verdict = detect(row["text"], token_ids=row.get("token_ids"), finish_reason=row.get("finish_reason"),
                         reference=row.get("reference"), token_logprobs=row.get("token_logprobs"))
        counts["suspect"] += verdict.verdict == "suspect"
        if row["label"] == "ambiguous":
            counts[f"ambiguous_{verdict.verdict}"] += 1
            continue
        gold, pred = row["label"] == "degenerate", verdict.verdict == "degenerate"
        cell = {(True, True): "tp", (False, True): "fp", (True, False): "fn", (False, False): "tn"}[(gold, pred)]
        counts[cell] += 1
        by_category[row.get("category") or row.get("genre") or row.get("task", "?")][cell] += 1
        if gold != pred:
            errors.append((row["id"], row["label"], verdict.verdict, verdict.kind, verdict.why))
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    return {
        "n": tp + fp + fn + counts["tn"],
        "suspect_share": counts["suspect"] / len(rows) if rows else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / (tp + fn) if tp + fn else 1.0,
        "counts": counts,
        "by_category": by_category,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--errors", action="store_true", help="print every misjudged example")
    parser.add_argument("--synthetic", type=int, default=600, help="size of the synthetic set")
    parser.add_argument("--no-heldout", action="store_true", help="while tuning: do not even print the held-out sets")
    args = parser.parse_args()
    v2, v3 = load("real_smollm2_v2.jsonl"), load("real_smollm2_v3.jsonl")
    sets = {
        "real SmolLM2 (tuned on)": load("real_smollm2.jsonl"),
        "real SmolLM2 (held out)": load("real_smollm2_heldout.jsonl"),
        "v2 (tune)": [r for r in v2 if r["split"] == "tune"],
        "v2 (held out)": [r for r in v2 if r["split"] == "heldout"],
        "v3 (tune)": [r for r in v3 if r["split"] == "tune"],
        "v3 (held out)": [r for r in v3 if r["split"] == "heldout"],
        "synthetic": build(args.synthetic),
    }
    if args.no_heldout:
        sets = {k: v for k, v in sets.items() if "held out" not in k}
    print(f"{'set':28} {'n':>5} {'precision':>10} {'recall':>8} {'suspect':>8}  ambiguous (left out)")
    for name, rows in sets.items():
        if not rows:
            continue
        res = evaluate(rows)
        amb = {k.split('_', 1)[1]: v for k, v in res["counts"].items() if k.startswith("ambiguous_")}
        print(f"{name:28} {res['n']:5d} {res['precision']:10.3f} {res['recall']:8.3f} "
              f"{res['suspect_share']:8.1%}  {amb or '-'}")
        if args.errors:
            for cat, cells in sorted(res["by_category"].items()):
                print(f"    {cat:26} {dict(cells)}")
            for err in res["errors"]:
                print("    MISJUDGED", *err)


if __name__ == "__main__":
    main()
