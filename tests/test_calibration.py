"""The detector's precision/recall on the shipped labelled sets (bench/data), pinned at what was
measured so that no change makes them worse. The goal (issue 16: precision ≥ 0.98 and recall ≥ 0.93,
≤ 5 % left `suspect`) is met on the first set and the synthetic one, not on outputs sampled at a
temperature (v2/v3, tune and held out): the bounds below are the measured values, not the goal
(README, "The loop detector"). `bench/calibrate.py --errors` shows why."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from calibrate import evaluate, load  # noqa: E402
from synthetic import build  # noqa: E402


@pytest.mark.parametrize(("name", "precision", "recall", "suspect"), [("real_smollm2.jsonl", 0.98, 0.98, 0.05),
                                                                      ("real_smollm2_heldout.jsonl", 0.91, 0.95, 0.05)])
def test_real_outputs_hold_their_numbers(name, precision, recall, suspect):
    rows = load(name)
    assert len(rows) >= 60 and {r["label"] for r in rows} == {"degenerate", "clean", "ambiguous"}
    result = evaluate(rows)
    assert result["precision"] >= precision, result["errors"]
    assert result["recall"] >= recall, result["errors"]
    assert result["suspect_share"] <= suspect, result["counts"]


@pytest.mark.parametrize(("name", "split", "precision", "recall"), [
    ("real_smollm2_v2.jsonl", "tune", 0.97, 0.96), ("real_smollm2_v2.jsonl", "heldout", 0.965, 0.9),
    ("real_smollm2_v3.jsonl", "tune", 0.97, 0.82), ("real_smollm2_v3.jsonl", "heldout", 0.94, 0.83)])
def test_sampled_real_outputs_hold_their_numbers(name, split, precision, recall):
    rows = [r for r in load(name) if r["split"] == split]
    assert len(rows) >= 90 and all(r["reason"] for r in rows)  # every label says why
    assert {r["label"] for r in rows} <= {"degenerate", "clean", "ambiguous"}
    assert all(len(r["token_logprobs"]) == len(r["token_ids"]) for r in rows)
    result = evaluate(rows)
    assert result["precision"] >= precision, result["errors"]
    assert result["recall"] >= recall, result["errors"]
    assert result["suspect_share"] <= 0.05, result["counts"]


def test_synthetic_set_covers_every_category_and_meets_the_goals():
    rows = build(600)
    assert len({r["category"] for r in rows}) >= 20
    result = evaluate(rows)
    assert result["precision"] >= 0.99 and result["recall"] >= 0.97, result["errors"]
