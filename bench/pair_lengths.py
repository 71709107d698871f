"""Chosen vs rejected length in tokens, as `dpominer train` would see a pairs file, with rejected loops kept
whole and cut to onset + K copies (`--rejected-loop-copies K`): the length signal a pair set carries.

    python bench/pair_lengths.py runs/degeneration/pairs.jsonl [--model smollm2-135m-instruct]

Baseline: K = 0 (loops whole). Prints per K the mean tokens of each side, the share of pairs whose rejected
side is the longer one, and the mean |chosen| − |rejected| (what R-DPO's α multiplies).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", type=Path)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--copies", default="0,1,2,3,4,8")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from dpominer.models import resolve_model
    from dpominer.records import Pair, iter_jsonl
    from dpominer.train.data import tokenize_pair

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model))
    records = list(iter_jsonl(args.pairs, Pair, unique_ids=False))
    reasons = [r.reason or "?" for r in records]
    print(f"{args.pairs}: {len(records)} pairs")
    print("| K | chosen tokens (mean) | rejected tokens (mean) | rejected longer | mean chosen − rejected "
          "| rejected longer, loop pairs | rejected longer, omission pairs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for k in (int(x) for x in args.copies.split(",")):
        rows = [tokenize_pair(r, tokenizer, loop_copies=4, separate=True, rejected_loop_copies=k or None)
                for r in records]
        chosen = [len(e.chosen_ids) for e in rows]
        rejected = [len(e.rejected_ids) for e in rows]
        longer = [rj > ch for ch, rj in zip(chosen, rejected, strict=True)]

        def share(reason: str, flags=longer) -> str:
            picked = [f for f, r in zip(flags, reasons, strict=True) if r == reason]
            return f"{sum(picked) / len(picked):.0%} of {len(picked)}" if picked else "–"

        gap = statistics.mean(c - r for c, r in zip(chosen, rejected, strict=True))
        print(f"| {k or 'whole'} | {statistics.mean(chosen):.0f} | {statistics.mean(rejected):.0f} "
              f"| {sum(longer) / len(longer):.0%} | {gap:+.0f} "
              f"| {share('rejected_degenerate')} | {share('rejected_omission')} |")


if __name__ == "__main__":
    main()
