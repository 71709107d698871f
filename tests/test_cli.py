from __future__ import annotations

import json
import subprocess
import sys

from conftest import LOOP, PASSAGE, candidate_record, read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_and_version_need_no_heavy_imports():
    out = subprocess.run([sys.executable, "-c", "import sys, dpominer.cli; "
                          "print(sorted(m for m in ('torch', 'transformers', 'vllm') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert "score" in run("--help").output and run("--version").output.startswith("dpominer ")


def test_score_annotates_every_candidate_and_records_the_run(candidates_file, tmp_path):
    out = tmp_path / "scored.jsonl"
    result = run("score", candidates_file, "-o", out)
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    verdicts = [[c["degeneration"]["verdict"] for c in r["candidates"]] for r in records]
    assert verdicts == [["clean", "degenerate", "clean"], ["degenerate", "degenerate"], ["clean", "clean"]]
    assert records[0]["candidates"][1]["fidelity"]["cer"] > 1.0
    meta = json.loads((tmp_path / "scored.jsonl.meta.json").read_text())
    assert meta["command"] == "score" and meta["summary"]["verdicts"]["degenerate"] == 3
    assert meta["config"]["detector"]["copies_long"] == 4.0 and "rapidfuzz" in meta["versions"]
    assert meta["inputs"][0]["bytes"] == candidates_file.stat().st_size and len(meta["inputs"][0]["blake2b"]) == 32
    assert "degenerate" in result.output


def test_pair_writes_trl_loadable_pairs_and_stats(candidates_file, tmp_path):
    import datasets  # a dev dependency: TRL loads pairs this way
    out, stats = tmp_path / "pairs.jsonl", tmp_path / "stats.json"
    result = run("pair", candidates_file, "-o", out, "--stats-json", stats)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert [(r["id"], r["reason"], r["chosen_source"]) for r in rows] == [
        ("clean-and-loop", "rejected_degenerate", "candidate"),
        ("all-loops", "rejected_degenerate", "reference"),
    ]  # all-loops: the second loop is a near-copy of the first and collapses
    numbers = json.loads(stats.read_text())
    assert numbers["pairs"] == 2 and numbers["documents_without_pair"] == {"no_rejected": 1}
    lengths = numbers["pair_lengths"]  # both rejected sides are loops, longer than their chosen sides
    assert lengths["rejected_longer_share"] == 1.0 and 0 < lengths["chosen_rejected_ratio"] < 1
    assert "chosen/rejected length" in result.output and "teaches length" in result.output
    dataset = datasets.load_dataset("json", data_files=str(out), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names) and len(dataset) == 2


def test_pair_scores_unscored_input_the_same_as_scored(candidates_file, tmp_path):
    run("score", candidates_file, "-o", tmp_path / "scored.jsonl")
    run("pair", tmp_path / "scored.jsonl", "-o", tmp_path / "a.jsonl")
    run("pair", candidates_file, "-o", tmp_path / "b.jsonl")
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")


def test_bad_input_one_line_exit_1_and_no_output(tmp_path):
    good = candidate_record("a", [(PASSAGE, "stop")])
    src = write_jsonl(tmp_path / "c.jsonl", [good, '{"id": "b", "prompt": "x", "candidates": "nope"}'])
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "dpominer", "pair", str(src), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: {src}:2: candidates: Input should be a valid list"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # nothing half-written


def test_skip_invalid_reports_how_many(tmp_path):
    good = candidate_record("a", [(PASSAGE, "stop"), (LOOP, "length")])
    src = write_jsonl(tmp_path / "c.jsonl", [good, "{broken", good])
    result = run("pair", src, "-o", tmp_path / "p.jsonl", "--skip-invalid")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "p.jsonl.meta.json").read_text())
    assert meta["summary"]["invalid_lines"] == 2 and meta["summary"]["pairs"] == 1


def test_mixed_prompt_forms_are_refused(tmp_path):
    src = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [(LOOP, "length")]),
                                             candidate_record("b", [(LOOP, "length")], messages=True)])
    result = run("pair", src, "-o", tmp_path / "p.jsonl")
    assert result.exit_code == 1 and "c.jsonl:2: a 'messages' record in a file of 'prompt' records" in result.output


def test_flag_errors_name_the_flag(candidates_file, tmp_path):
    result = run("pair", candidates_file, "-o", tmp_path / "p.jsonl", "--min-margin", "-1")
    assert result.exit_code == 2  # refused while parsing, before any work
    assert "Error: Invalid value for '--min-margin': Input should be greater than or equal to 0" in result.output
    bad = run("pair", candidates_file, "-o", tmp_path / "p.jsonl", "--chosen-from", "best")
    assert bad.exit_code == 1 and "--chosen-from: Input should be 'candidates', 'reference' or 'auto'" in bad.output


def test_config_file_and_flags(candidates_file, tmp_path):
    cfg = tmp_path / "pair.toml"
    cfg.write_text("[policy]\nchosen_from = 'reference'\nmax_pairs_per_doc = 1\n"
                   "[score.detector]\nmin_span_chars = 30\n")
    run("pair", candidates_file, "-o", tmp_path / "p.jsonl", "--config", cfg)
    rows = read_jsonl(tmp_path / "p.jsonl")
    assert {r["chosen_source"] for r in rows} == {"reference"}
    meta = json.loads((tmp_path / "p.jsonl.meta.json").read_text())
    assert meta["config"]["score"]["detector"]["min_span_chars"] == 30
    run("pair", candidates_file, "-o", tmp_path / "q.jsonl", "--config", cfg, "--chosen-from", "auto")
    assert {r["chosen_source"] for r in read_jsonl(tmp_path / "q.jsonl")} == {"candidate", "reference"}
    cfg.write_text("[policy]\nmax_pairs = 1\n")
    result = run("pair", candidates_file, "-o", tmp_path / "r.jsonl", "--config", cfg)
    assert result.exit_code == 1 and "pair.toml: policy.max_pairs: Extra inputs are not permitted" in result.output
