"""Print the structured run's before/after table: `python table.py runs/structured/eval/eval.json`.

Beside the check failure rates (from eval.json) it measures, from each model's scored file, what the
output holds: *fields present* (share of the gold object's 8 fields the output has at all: coverage)
and *fields right* (share equal to the gold value: fidelity). An output that is not JSON scores 0 on
both, so a model cannot look better by emitting less.
"""

from __future__ import annotations

import json
import sys

from dpominer.checks import parse_json
from dpominer.evaluate import wilson


def fields(scored_file: str) -> tuple[float, float]:
    present = right = total = 0
    for line in open(scored_file, encoding="utf-8"):
        record = json.loads(line)
        gold = json.loads(record["reference"])
        for cand in record["candidates"]:
            value, _ = parse_json(cand["text"])
            value = value if isinstance(value, dict) else {}
            present += sum(key in value for key in gold)
            right += sum(value.get(key) == gold_value for key, gold_value in gold.items())
            total += len(gold)
    return present / total, right / total


def pct(rate: float, ci: list[float]) -> str:
    return f"{rate:.1%} ({ci[0]:.1%}–{ci[1]:.1%})"


def main(path: str) -> None:
    data = json.load(open(path))
    names = list(dict.fromkeys(n for row in data["models"] for n in row.get("checks", {})))
    print(f"| model | docs | {' | '.join(f'fails {n} (95 % CI)' for n in names)} | degenerate (95 % CI) "
          "| fields present | fields right | mean CER |")
    print("| --- | ---: |" + " ---: |" * (len(names) + 4))
    for row in data["models"]:
        checks = [pct(row["checks"][n]["failure_rate"], row["checks"][n]["failure_ci95"]) for n in names]
        present, right = fields(row["scored_file"])
        print(f"| {row['label']} | {row['documents']} | {' | '.join(checks)} "
              f"| {pct(row['degeneration_rate'], row['degeneration_ci95'])} | {present:.1%} | {right:.1%} "
              f"| {row['cer_mean']:.3f} |")
    first, last = data["models"][0], data["models"][-1]
    for name in names:
        before, after = first["checks"][name], last["checks"][name]
        change = (after["failure_rate"] - before["failure_rate"]) / before["failure_rate"] if before["failed"] else None
        valid_before = wilson(before["checked"] - before["failed"], before["checked"])
        valid_after = wilson(after["checked"] - after["failed"], after["checked"])
        print(f"\n{name}: valid {1 - before['failure_rate']:.1%} ({valid_before[0]:.1%}–{valid_before[1]:.1%}) → "
              f"{1 - after['failure_rate']:.1%} ({valid_after[0]:.1%}–{valid_after[1]:.1%}); failures "
              + ("n/a" if change is None else f"{change:+.0%} relative"))


if __name__ == "__main__":
    main(sys.argv[1])
