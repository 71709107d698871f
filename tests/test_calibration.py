"""The detector's precision/recall on the shipped labelled sets (bench/data), against the goals:
precision ≥ 0.97 and recall ≥ 0.93 on real model outputs, and few left `suspect`.
`bench/calibrate.py --errors` shows why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from calibrate import evaluate, load  # noqa: E402
from synthetic import build  # noqa: E402


@pytest.mark.parametrize("name", ["real_smollm2.jsonl", "real_smollm2_heldout.jsonl"])
def test_real_outputs_meet_the_goals(name):
    rows = load(name)
    assert len(rows) >= 60 and {r["label"] for r in rows} == {"degenerate", "clean", "ambiguous"}
    result = evaluate(rows)
    assert result["precision"] >= 0.97, result["errors"]
    assert result["recall"] >= 0.93, result["errors"]


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_v2_real_outputs_meet_the_goals(split):
    rows = [r for r in load("real_smollm2_v2.jsonl") if r["split"] == split]
    assert len(rows) >= 25 and all(r["reason"] for r in rows)  # every label says why
    assert {r["label"] for r in rows} <= {"degenerate", "clean", "ambiguous"}
    assert all(len(r["token_logprobs"]) == len(r["token_ids"]) for r in rows)
    result = evaluate(rows)
    assert result["precision"] >= 0.97, result["errors"]
    assert result["recall"] >= 0.9, result["errors"]
    assert result["suspect_share"] <= 0.12, result["counts"]


def test_synthetic_set_covers_every_category_and_meets_the_goals():
    rows = build(600)
    assert len({r["category"] for r in rows}) >= 20
    result = evaluate(rows)
    assert result["precision"] >= 0.99 and result["recall"] >= 0.97, result["errors"]
