"""`dpominer report` from the example run: every plot drawn has data, the page is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.cli import app
from dpominer.pairing import PairRunConfig, run_pair
from dpominer.report import likelihood_displacement

runner = CliRunner()
EXAMPLES = Path(__file__).parents[1] / "examples"


def metrics(path: Path, chosen_logps: list[float]) -> Path:
    rows = [{"step": i + 1, "loss": 0.69 - 0.05 * i, "rewards/margins": 0.1 * i, "rewards/accuracies": 0.5 + 0.05 * i,
             "logps/chosen": c, "logps/rejected": c - 5 * i, "eval/loss": 0.7 - 0.04 * i}
            for i, c in enumerate(chosen_logps)]
    return write_jsonl(path, rows)


def test_report_from_the_example_run(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    run_pair(EXAMPLES / "candidates.jsonl", pairs, PairRunConfig())
    run = tmp_path / "train"
    run.mkdir()
    metrics(run / "metrics.jsonl", [-100, -104, -110, -118])
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(json.dumps({"models": [
        {"label": "base", "degeneration_rate": 0.4, "degeneration_ci95": [0.3, 0.5], "cer_mean": 0.2,
         "omission_rate": 0.1, "omission_ci95": [0.05, 0.2], "coverage_median": 0.9, "coverage_mean": 0.7},
        {"label": "dpo", "degeneration_rate": 0.1, "degeneration_ci95": [0.05, 0.2], "cer_mean": 0.19,
         "omission_rate": 0.5, "omission_ci95": [0.4, 0.6], "coverage_median": 0.3, "coverage_mean": 0.4}],
        "changes": [{"degeneration_change": 0.0}, {"degeneration_change": -0.75, "omission_change": 4.0,
                    "verdict": "fewer loops but more omissions: the model learned to stop early"}]}))
    out = tmp_path / "site" / "report.html"
    result = runner.invoke(app, ["report", str(EXAMPLES / "candidates.jsonl"), str(pairs), str(run),
                                 str(tmp_path / "eval"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    points = {m.group(1): int(m.group(2)) for m in re.finditer(r'alt="([^"]+)" data-points="(\d+)"', page)}
    assert set(points) == {"Degeneration rate per model", "Omission and coverage per model",
                           "Fidelity of chosen vs rejected",
                           "Loop unit length and onset", "Pairs by reason", "Training: train"}
    assert all(n > 0 for n in points.values())
    n_pairs = len(read_jsonl(pairs))
    assert points["Pairs by reason"] == n_pairs and points["Fidelity of chosen vs rejected"] == 2 * n_pairs
    assert points["Omission and coverage per model"] == 2
    assert "50.0% (40.0%–60.0%)" in page and "+400%" in page and "learned to stop early" in page
    assert page.count("data:image/png;base64,") == 6 and "<mark>" in page  # images inline, loops marked
    assert "likelihood displacement" in page  # logps/chosen fell from -100 to -118
    assert sorted(p.name for p in out.parent.glob("*.png")) == sorted(
        f"report-{n}.png" for n in ("degeneration_rate", "omission_coverage", "cer_chosen_rejected", "loop_shape",
                                    "pairs_by_reason", "training_train"))
    assert json.loads(out.with_name("report.html.meta.json").read_text())["summary"]["pairs_by_reason"] == n_pairs


def test_likelihood_displacement_is_flagged_only_when_chosen_falls():
    rows = [{"logps/chosen": v} for v in (-100, -100.5, -101)]
    assert likelihood_displacement(rows) is None
    assert "fell from -100.0 to -120.0" in likelihood_displacement([{"logps/chosen": v} for v in (-100, -110, -120)])


def test_report_refuses_what_it_cannot_read(tmp_path):
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}])
    result = runner.invoke(app, ["report", str(odd), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "odd.jsonl: not candidates, pairs or training metrics" in result.output
    assert not (tmp_path / "r.html").exists()


def test_report_reads_pairs_through_the_pair_model(tmp_path):
    """A pair line the Pair model refuses is one line naming path:LINE, as in every other stage."""
    good = {"prompt": "p", "chosen": "a", "rejected": "b", "reason": "rejected_degenerate",
            "chosen_scores": {"verdict": "clean", "fidelity": {"cer": 0.0}},
            "rejected_scores": {"verdict": "degenerate", "fidelity": {"cer": 2.0}, "start_char": 0, "unit_len": 1}}
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [good, good | {"chosen": [{"role": "assistant", "content": "a"}]}])
    result = runner.invoke(app, ["report", str(pairs), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and f"{pairs}:2: " in result.output and "all be strings" in result.output
    assert not (tmp_path / "r.html").exists()
    write_jsonl(pairs, [good, good | {"id": "x"}])
    result = runner.invoke(app, ["report", str(pairs), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert 'alt="Loop unit length and onset" data-points="2"' in page and "<mark>b</mark>" in page
