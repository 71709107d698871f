"""`dpominer eval`: Wilson intervals worked by hand, aggregation of scored candidates, the CLI on
existing candidate files and on two tiny models sampled through `dpominer sample`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LOOP, PASSAGE, candidate_record, documents, write_jsonl
from typer.testing import CliRunner

from dpominer.cli import app
from dpominer.evaluate import compare, evaluate_file, relative, wilson
from dpominer.mining import ScoreConfig, run_score

runner = CliRunner()


def test_wilson_interval_by_hand():
    # 5/10: centre (0.5 + 1.9208/10)/(1 + 3.8416/10) = 0.5; half = 1.96·sqrt(0.025 + 0.00960)/1.38416 = 0.2634
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # 3.8416/13.8416
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (0.0, 0.0)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    before = write_jsonl(tmp_path / "before.jsonl", [
        candidate_record("a", [(LOOP, "length"), (LOOP + " or", "length")]),
        candidate_record("b", [(PASSAGE, "stop"), (LOOP, "length")]),
    ])
    after = write_jsonl(tmp_path / "after.jsonl", [
        candidate_record("a", [(PASSAGE, "stop"), (LOOP, "length")]),
        candidate_record("b", [(PASSAGE, "stop"), (PASSAGE.replace("bytes", "bites"), "stop")]),
    ])
    return before, after


def test_aggregation_of_scored_candidates(tmp_path):
    before, after = _files(tmp_path)
    run_score(before, tmp_path / "s.jsonl", ScoreConfig())
    row = evaluate_file(tmp_path / "s.jsonl", "before").as_dict()
    assert (row["documents"], row["candidates"], row["degenerate"]) == (2, 4, 3)
    assert row["degeneration_rate"] == 0.75 and row["degeneration_ci95"] == pytest.approx(wilson(3, 4))
    assert row["docs_with_loop_rate"] == 1.0 and row["hit_max_tokens_rate"] == 0.75
    assert (row["suspect"], row["suspect_rate"]) == (0, 0.0)  # the four are decided
    assert 0 < row["loop_onset_median"] < 0.2  # LOOP starts 60 characters into ~900
    assert row["cer_mean"] == pytest.approx(sum(_cers(tmp_path / "s.jsonl")) / 4)
    assert relative(0.75, 0.25) == pytest.approx(-2 / 3) and relative(0.0, 0.1) is None
    assert compare([row, row | {"label": "x", "degeneration_rate": 0.375}])[1]["degeneration_change"] == -0.5


def test_omission_rate_and_coverage_beside_degeneration(tmp_path):
    words = PASSAGE.split()  # 44 words
    early = " ".join(words[:11])  # stops on its own after 11/44 = 25 % of the words: an omission
    before = write_jsonl(tmp_path / "before.jsonl", [
        candidate_record("a", [(LOOP, "length")]), candidate_record("b", [(PASSAGE, "stop")]),
        candidate_record("c", [(PASSAGE, "stop")]), candidate_record("d", [(PASSAGE, "stop")])])
    after = write_jsonl(tmp_path / "after.jsonl", [
        candidate_record("a", [(early, "stop")]), candidate_record("b", [(early, "stop")]),
        candidate_record("c", [(early, "stop")]), candidate_record("d", [(PASSAGE, "stop")])])
    rows = []
    for name, path in (("before", before), ("after", after)):
        run_score(path, tmp_path / f"{name}.s.jsonl", ScoreConfig())
        rows.append(evaluate_file(tmp_path / f"{name}.s.jsonl", name).as_dict())
    base, dpo = rows
    assert (base["omission_rate"], base["cut_short_rate"]) == (0.0, 0.25)  # the loop is cut short, not omitted
    assert (dpo["omission_rate"], dpo["omissions"]) == (0.75, 3)
    assert dpo["omission_ci95"] == pytest.approx(wilson(3, 4))
    assert dpo["coverage_median"] == 0.25 and dpo["coverage_mean"] == pytest.approx((3 * 0.25 + 1) / 4)
    assert dpo["coverage_below_half_rate"] == 0.75 and dpo["length_ratio_median"] == 0.25  # 11 of 44 words
    change = compare(rows)[1]
    assert change["degeneration_change"] == -1.0 and change["omission_change"] is None  # base rate 0
    assert change["coverage_median_change"] == pytest.approx(-0.75)  # median 1.0 → 0.25
    # intervals 3/4 vs 0/4 overlap at n = 4 …
    assert change["verdict"] == "no clear change in loops, no clear change in omissions"
    # … and at n = 100 they do not: the trade is named
    big_base = base | {"degeneration_ci95": wilson(25, 100), "omission_ci95": wilson(0, 100)}
    big_dpo = dpo | {"degeneration_ci95": wilson(0, 100), "omission_ci95": wilson(75, 100)}
    assert compare([big_base, big_dpo])[1]["verdict"] == ("fewer loops but more omissions: the model learned to "
                                                           "stop early")


def _cers(path: Path) -> list[float]:
    return [c["fidelity"]["cer"] for line in path.open() for c in json.loads(line)["candidates"]]


def test_eval_of_existing_candidate_files(tmp_path):
    before, after = _files(tmp_path)
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "-o", str(out), "--candidates", str(before), "--candidates", str(after)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    assert [m["label"] for m in data["models"]] == ["before", "after"]
    assert [m["degeneration_rate"] for m in data["models"]] == [0.75, 0.25]
    assert data["changes"][1]["degeneration_change"] == pytest.approx(-2 / 3)
    assert "-67%" in result.output and (out / "eval.json.meta.json").exists()


def test_eval_needs_something_to_evaluate(tmp_path):
    result = runner.invoke(app, ["eval", "-o", str(tmp_path / "e")])
    assert result.exit_code == 1 and "nothing to evaluate" in result.output


def test_eval_samples_two_models_on_the_same_documents(tiny_model, tmp_path):
    from conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    docs = write_jsonl(tmp_path / "docs.jsonl", documents(4))
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", str(docs), "-o", str(out), "-m", str(tiny_model), "-m", str(other),
                                 "--backend", "hf", "-n", "2", "--temperature", "0.7", "--max-tokens", "24"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    assert [m["label"] for m in data["models"]] == ["model", "other"]
    for m in data["models"]:
        assert m["documents"] == 4 and m["candidates"] == 8 and m["cer_mean"] is not None
    seeds = [[c["seed"] for line in (out / f"{label}.candidates.jsonl").open() for c in json.loads(line)["candidates"]]
             for label in ("model", "other")]
    assert seeds[0] == seeds[1]  # the same seeds for every model


def test_suspect_share_is_reported_beside_the_rate():
    from dpominer.evaluate import ModelEval
    from dpominer.records import CandidateRecord

    verdicts = ["degenerate", "suspect", "suspect", "clean"]
    record = CandidateRecord.model_validate({"id": "a", "prompt": "p", "candidates": [
        {"index": i, "text": "x", "finish_reason": "stop", "degeneration": {"verdict": v}}
        for i, v in enumerate(verdicts)]})
    result = ModelEval("m")
    result.add(record)
    row = result.as_dict()
    assert (row["degenerate"], row["suspect"]) == (1, 2)
    assert (row["degeneration_rate"], row["suspect_rate"]) == (0.25, 0.5)
