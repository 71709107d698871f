"""Print an eval.json as the Markdown table the README shows: `python table.py runs/degeneration/eval/eval.json`.

Loops and early stops side by side: a model that trades one for the other must read as what it is."""

from __future__ import annotations

import json
import sys


def _rel(change: float | None, first: bool) -> str:
    return "—" if first else ("n/a" if change is None else f"{change:+.0%}")  # None: the first model's value is 0


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(path: str) -> None:
    data = json.load(open(path))
    print("| model | held-out docs | degenerate (greedy) | 95 % CI | change | omission (stopped early) | 95 % CI "
          "| change | coverage median | coverage mean | < 50 % of the words | words written / reference (median) "
          "| hit max_tokens | mean CER |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for i, (row, change) in enumerate(zip(data["models"], data["changes"], strict=True)):
        lo, hi = row["degeneration_ci95"]
        o_lo, o_hi = row.get("omission_ci95") or (None, None)
        print(f"| {row['label']} | {row['documents']} | {row['degeneration_rate']:.1%} | {lo:.1%}–{hi:.1%} "
              f"| {_rel(change['degeneration_change'], i == 0)} | {_num(row.get('omission_rate'), '.1%')} "
              f"| {_num(o_lo, '.1%')}–{_num(o_hi, '.1%')} | {_rel(change.get('omission_change'), i == 0)} "
              f"| {_num(row.get('coverage_median'), '.2f')} | {_num(row.get('coverage_mean'), '.2f')} "
              f"| {_num(row.get('coverage_below_half_rate'), '.1%')} | {_num(row.get('length_ratio_median'), '.2f')} "
              f"| {row['hit_max_tokens_rate']:.1%} "
              f"| {_num(row['cer_mean'], '.3f')} |")
    for change in data["changes"][1:]:
        if change.get("verdict"):
            print(f"\n{change['label']}: {change['verdict']}")


if __name__ == "__main__":
    main(sys.argv[1])
