"""Print an eval.json as the Markdown table the README shows: `python table.py runs/degeneration/eval/eval.json`."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    data = json.load(open(path))
    print("| model | held-out docs | degenerate (greedy) | 95 % CI | change | hit max_tokens | mean CER | median CER |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, (row, change) in enumerate(zip(data["models"], data["changes"], strict=True)):
        lo, hi = row["degeneration_ci95"]
        rel = change["degeneration_change"]  # against the first model; None when its rate is 0
        delta = "—" if i == 0 or rel is None else f"{rel:+.0%}"
        print(f"| {row['label']} | {row['documents']} | {row['degeneration_rate']:.1%} | {lo:.1%}–{hi:.1%} | {delta} "
              f"| {row['hit_max_tokens_rate']:.1%} | {row['cer_mean']:.3f} | {row['cer_median']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1])
