"""Failure checks (`score --check`): built-ins, user functions, entry points, pairing, eval, bad input."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
from conftest import LOOP, PASSAGE, candidate_record, read_jsonl, write_jsonl
from typer.testing import CliRunner

from dpominer.checks import CheckSpec, compiled, parse_json, parse_specs, run_checks
from dpominer.cli import app
from dpominer.jsonl import InputError
from dpominer.pairing import PairConfig, make_pairs
from dpominer.records import CandidateRecord
from dpominer.scoring import ScoreConfig, score_record

runner = CliRunner()
SCHEMA = {"type": "object", "required": ["name", "version"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "version": {"type": "string", "pattern": "^[0-9]"},
                         "depends": {"type": "array", "items": {"type": "string"}}}}
GOOD = '{"name": "zlib", "version": "1.3", "depends": ["libc6"]}'


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def check(spec: str, text: str, reference: str | None = "ref") -> tuple[bool, str | None] | None:
    results = run_checks(compiled((CheckSpec(spec=spec),)), text, {"reference": reference})
    return (results[0].passed, results[0].why) if results else None


@pytest.fixture
def schema(tmp_path) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    return path


def test_json_accepts_the_whole_output_or_a_fenced_block_and_says_why_not():
    assert parse_json(GOOD)[0]["name"] == "zlib"
    assert parse_json(f"Here it is:\n```JSON\n{GOOD}\n```\nDone.")[0]["version"] == "1.3"
    assert parse_json('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```')[0] == {"a": 1}  # the first block
    assert parse_json(f"```json\n{GOOD[:20]}")[1] == "the ```json block is not closed"  # cut off at max_tokens
    assert parse_json('{"a": NaN}')[1].endswith("NaN is not JSON")  # strict: Python's json would take it
    assert parse_json("   ")[1] == "empty output"
    why = parse_json('{"name": "zlib",, }')[1]
    assert why.startswith("not JSON and no ```json block: Expecting property name") and "char 16" in why
    assert parse_json('```json\n{"a": }\n```')[1].startswith("```json block is not JSON: Expecting value")
    assert check("json", "[1, 2]") == (True, None) and check("json", "plain prose")[0] is False
    assert parse_json("[" * 100_000 + "]" * 100_000)[1].endswith("nested too deeply to parse")  # not a crash
    assert parse_json("「抽出」")[1].startswith("not JSON") and parse_json('{"名前": "値"}')[0] == {"名前": "値"}


def test_json_schema_why_names_the_first_failing_path_and_rule(schema):
    spec = f"json-schema:{schema}"
    assert check(spec, GOOD) == (True, None)
    assert check(spec, '{"name": "zlib"}') == (False, "$: required — 'version' is a required property")
    assert check(spec, '{"name": "z", "version": "v1"}') == (False, "$.version: pattern — 'v1' does not match '^[0-9]'")
    assert check(spec, '{"name": "z", "version": "1", "depends": ["a", 2]}') == (
        False, "$.depends[1]: type — 2 is not of type 'string'")
    assert check(spec, "no json here")[1].startswith("not JSON")
    deep = '{"name": "z", "version": "1", "depends": [' + "[" * 900 + "]" * 900 + "]}"
    passed, why = check(spec, deep)  # 900 levels parse; the failure is reported, short, not a crash
    assert not passed and why.startswith("$.depends[0]: type — [[[[") and len(why) < 200
    long_why = check(spec, json.dumps(["x" * 4000]))[1]  # the message quotes the instance: kept short
    assert long_why.startswith("$: type — ") and len(long_why) < 200


def test_regex_and_length_checks():
    assert check("regex-forbid:(?i)lorem ipsum", "Some Lorem Ipsum text") == (
        False, "forbidden /(?i)lorem ipsum/ at char 5: 'Lorem Ipsum'")
    assert check("regex-forbid:import pickle", "import json") == (True, None)
    assert check("regex-require:^\\{", '{"a": 1}') == (True, None)
    assert check("regex-require:^\\{", 'x {"a": 1}') == (False, "required /^\\{/ not found")
    assert check("max-length-ratio:1.5", "x" * 15, "y" * 10) == (True, None)
    assert check("max-length-ratio:1.5", "x" * 16, "y" * 10) == (False, "16 chars > 1.5 × the reference's 10")
    assert check("max-length-ratio:1.5", "x" * 16, None) is None  # no reference: not applied, not counted


@pytest.mark.parametrize(("spec", "message"), [
    ("jsn", "unknown check 'jsn' (built-ins: json, json-schema:FILE"),
    ("json-schema", "'json-schema' needs an argument: json-schema:FILE"),
    ("regex-forbid:(unclosed", "regex-forbid: bad pattern '(unclosed'"),
    ("max-length-ratio:-2", "the ratio must be a positive number"),
    ("max-length-ratio:two", "'two' is not a number"),
    ("py:onlymodule", "expected py:MODULE:FUNCTION"),
    ("json:x", "'json' takes no argument"),
])
def test_bad_specs_are_one_line_naming_the_flag(spec, message, tmp_path):
    out = tmp_path / "scored.jsonl"
    cands = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [(GOOD, "stop")])])
    result = run("score", cands, "-o", out, "--check", spec)
    assert result.exit_code == 1 and result.output.startswith("error: --check") and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_unreadable_schema_and_unimportable_targets_stop_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cands = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [(GOOD, "stop")])])
    (tmp_path / "bad_schema.json").write_text('{"type": "objekt"}')
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "chk_not_callable.py").write_text("VALUE = 3\n")
    (tmp_path / "chk_raises.py").write_text("raise RuntimeError('broken at import')\n")
    cases = {"json-schema:missing.json": "cannot read schema missing.json: No such file or directory",
             "json-schema:notjson.json": "schema notjson.json is not JSON",
             "json-schema:bad_schema.json": "is not a valid JSON Schema",
             "py:no_such_module_xyz:f": "cannot import no_such_module_xyz: ModuleNotFoundError",
             "py:chk_raises:f": "cannot import chk_raises: RuntimeError: broken at import",
             "py:chk_not_callable:VALUE": "chk_not_callable:VALUE is not callable (a int)",
             "py:chk_not_callable:missing": "chk_not_callable has no attribute 'missing'"}
    for spec, message in cases.items():
        result = run("score", cands, "-o", tmp_path / "out.jsonl", "--check", "json", "--check", spec)
        assert result.exit_code == 1, spec
        assert result.output.startswith(f"error: --check: {spec}: ") and message in result.output, result.output
        assert not (tmp_path / "out.jsonl").exists()


def test_score_adds_checks_to_every_candidate_and_counts_failures(schema, tmp_path):
    cands = write_jsonl(tmp_path / "c.jsonl", [
        candidate_record("a", [(GOOD, "stop"), ('{"name": "zlib"}', "stop"), ("", "error")], reference=GOOD),
        candidate_record("b", [("not json", "stop")], reference=None)])
    out = tmp_path / "scored.jsonl"
    result = run("score", cands, "-o", out, "--check", f"json-schema:{schema}", "--check", "max-length-ratio:2")
    assert result.exit_code == 0, result.output
    a, b = read_jsonl(out)
    assert a["candidates"][0]["checks"] == [{"name": "json-schema", "passed": True},
                                            {"name": "max-length-ratio", "passed": True}]
    assert a["candidates"][1]["checks"][0] == {"name": "json-schema", "passed": False,
                                               "why": "$: required — 'version' is a required property"}
    assert "checks" not in a["candidates"][2]  # sampling failed: nothing to check
    assert [c["name"] for c in b["candidates"][0]["checks"]] == ["json-schema"]  # no reference, no length check
    summary = json.loads((tmp_path / "scored.jsonl.meta.json").read_text())["summary"]
    assert summary["checks"] == {"json-schema": {"checked": 3, "failed": 2}, "max-length-ratio": {"checked": 2,
                                                                                                  "failed": 0}}
    assert "failed check json-schema" in result.output


def test_config_file_checks_and_flags_replace_them(schema, tmp_path):
    cands = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [("TODO: fill in", "stop")])])
    config = tmp_path / "run.toml"
    config.write_text(f'[[checks]]\nspec = "json-schema:{schema}"\n\n[[checks]]\nspec = "regex-forbid:TODO"\n'
                      'name = "no-todo"\n')
    assert run("score", cands, "-o", tmp_path / "s.jsonl", "--config", config).exit_code == 0
    assert [c["name"] for c in read_jsonl(tmp_path / "s.jsonl")[0]["candidates"][0]["checks"]] == [
        "json-schema", "no-todo"]
    assert run("score", cands, "-o", tmp_path / "t.jsonl", "--config", config, "--check", "json").exit_code == 0
    assert [c["name"] for c in read_jsonl(tmp_path / "t.jsonl")[0]["candidates"][0]["checks"]] == ["json"]
    config.write_text('[[checks]]\nspec = "json-schema:gone.json"\n')
    result = run("score", cands, "-o", tmp_path / "u.jsonl", "--config", config)
    assert result.exit_code == 1 and f"error: {config}: checks: json-schema:gone.json: cannot read" in result.output


def test_two_checks_of_one_kind_are_named_by_their_spec():
    specs = parse_specs(["regex-forbid:TODO", "regex-forbid:FIXME", "json"])
    assert [c.name for c in compiled(tuple(specs))] == ["regex-forbid:TODO", "regex-forbid:FIXME", "json"]
    with pytest.raises(InputError, match="two checks named 'json'"):
        parse_specs(["json", "json"])


def _module(tmp_path: Path, name: str, body: str) -> str:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def test_py_check_is_imported_once_gets_the_document_and_its_errors_name_the_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `py:MODULE:FUNCTION` finds modules in the working folder
    name = _module(tmp_path, "chk_user_once", """
        from pathlib import Path
        with Path("imports.log").open("a") as f:
            f.write("imported\\n")

        def no_insecure(text, document):
            if document["id"] == "explode":
                raise KeyError("boom")
            if "import pickle" in text:
                return "imports pickle (" + document["meta"]["lang"] + ")"
            return None

        def wrong_type(text, document):
            return 3
    """)
    rows = [candidate_record(f"d{i}", [("import json", "stop"), ("import pickle", "stop")], reference=None)
            for i in range(3)]
    for row in rows:
        row["meta"] = {"lang": "python"}
    cands = write_jsonl(tmp_path / "c.jsonl", rows)
    result = run("score", cands, "-o", tmp_path / "s.jsonl", "--check", f"py:{name}:no_insecure")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "imports.log").read_text() == "imported\n"  # once, though called six times
    checks = [c["checks"][0] for r in read_jsonl(tmp_path / "s.jsonl") for c in r["candidates"]]
    assert checks[:2] == [{"name": f"py:{name}:no_insecure", "passed": True},
                          {"name": f"py:{name}:no_insecure", "passed": False, "why": "imports pickle (python)"}]

    rows.insert(1, candidate_record("explode", [("x", "stop")], reference=None))
    cands = write_jsonl(tmp_path / "c2.jsonl", ["", *rows])  # a blank first line: the record is on line 3
    result = run("score", cands, "-o", tmp_path / "s2.jsonl", "--check", f"py:{name}:no_insecure")
    assert result.exit_code == 1 and not (tmp_path / "s2.jsonl").exists()
    assert result.output.strip() == (f"error: {cands}:3: check py:{name}:no_insecure: KeyError: 'boom' "
                                     "(document 'explode')")
    result = run("score", cands, "-o", tmp_path / "s3.jsonl", "--check", f"py:{name}:wrong_type")
    assert result.exit_code == 1 and ":2: check" in result.output and "returned int; expected None" in result.output


def test_entry_point_checks_with_and_without_an_argument(tmp_path, monkeypatch):
    _module(tmp_path, "chk_plugin_pkg", """
        def has_license(text, document):
            return None if "SPDX" in text else "no SPDX line"

        def max_words(limit):
            limit = int(limit)
            return lambda text, document: None if len(text.split()) <= limit else f"over {limit} words"
    """)
    info = tmp_path / "chk_plugin_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chk-plugin-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dpominer.checks]\nspdx = chk_plugin_pkg:has_license\n"
                                           "max-words = chk_plugin_pkg:max_words\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    checks = compiled(tuple(parse_specs(["spdx", "max-words:3"])))
    results = run_checks(checks, "one two three four", {})
    assert [(r.name, r.passed, r.why) for r in results] == [("spdx", False, "no SPDX line"),
                                                            ("max-words", False, "over 3 words")]
    with pytest.raises(ValueError, match=r"unknown check 'spdy' .*entry points \(dpominer.checks\): max-words, spdx"):
        compiled(tuple(parse_specs(["spdy"])))


def test_specs_are_plain_data_that_pickle_to_worker_processes(schema):
    import multiprocessing

    cfg = ScoreConfig(checks=parse_specs(["json", f"json-schema:{schema}"]))
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    record = CandidateRecord.model_validate(candidate_record("a", [(GOOD, "stop"), ("{}", "stop")], reference=None))
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh interpreter builds its own checks
        scored = pool.apply(score_record, (record, cfg))
    assert [c.failed_checks for c in scored.candidates] == [[], ["json-schema"]]


def _scored(texts, reference, specs) -> CandidateRecord:
    record = CandidateRecord.model_validate(candidate_record("doc", texts, reference))
    return score_record(record, ScoreConfig(checks=parse_specs(specs)))


def test_pair_never_chooses_a_failing_candidate_and_rejects_it_after_loops():
    near = PASSAGE.replace("bytes", "bites", 1)
    worse = PASSAGE + " and so on and so forth, as the manual says" * 2  # complete, but CER 0.36
    texts = [(PASSAGE + " TODO", "stop"), (LOOP, "length"), (near, "stop"), (worse, "stop")]
    record = _scored(texts, PASSAGE, ["regex-forbid:TODO"])
    outcome = make_pairs(record, PairConfig())
    # the exact copy fails the check, so the near copy is chosen; order: loop, failed check, worse fidelity
    assert [(p.reason, p.rejected_index) for p in outcome.pairs] == [
        ("rejected_degenerate", 1), ("rejected_failed_check", 0), ("rejected_worse_fidelity", 3)]
    assert {p.chosen_index for p in outcome.pairs} == {2}
    assert outcome.pairs[1].rejected_scores.failed_checks == ["regex-forbid"]
    assert "failed_checks" not in outcome.pairs[0].rejected_scores
    assert "failed_checks" not in outcome.pairs[0].chosen_scores


def test_loops_failed_checks_and_omissions_take_turns_before_worse_fidelity():
    """The rejected sides alternate loop → failed check → omission (each kind most severe first), so
    under --max-pairs-per-doc a document with all three gives pairs of each; a candidate counts as the
    first kind it is (a failing early stop is a failed check); worse fidelity comes after them all."""
    near = PASSAGE.replace("bytes", "bites", 1)
    loop2 = PASSAGE[:60] + " then the decoder tries once more with errors set to replace," * 12 + " then"
    texts = [(PASSAGE + " TODO FIXME", "stop"), (LOOP, "length"), (near, "stop"), (PASSAGE[:121], "stop"),
             (loop2, "length"), (PASSAGE[:80] + " TODO", "stop"),
             (PASSAGE + " and so on and so forth, as the manual says" * 2, "stop")]
    record = _scored(texts, PASSAGE, ["regex-forbid:TODO", "regex-forbid:FIXME"])
    assert [c.omission.verdict for c in record.candidates] == [
        "complete", "cut", "complete", "omission", "cut", "omission", "complete"]
    every = make_pairs(record, PairConfig(max_pairs_per_doc=10)).pairs
    assert [(p.reason, p.rejected_index) for p in every] == [
        ("rejected_degenerate", 1), ("rejected_failed_check", 0), ("rejected_omission", 3),
        ("rejected_degenerate", 4), ("rejected_failed_check", 5), ("rejected_worse_fidelity", 6)]
    assert {p.chosen_index for p in every} == {2}
    capped = make_pairs(record, PairConfig()).pairs  # 4 per document: every kind still gets one
    assert [p.reason for p in capped] == [
        "rejected_degenerate", "rejected_failed_check", "rejected_omission", "rejected_degenerate"]
    no_omission = make_pairs(record, PairConfig(max_pairs_per_doc=10, reject_omission=False)).pairs
    assert [(p.reason, p.rejected_index) for p in no_omission] == [
        ("rejected_degenerate", 1), ("rejected_failed_check", 0), ("rejected_degenerate", 4),
        ("rejected_failed_check", 5), ("rejected_worse_fidelity", 6)]


def test_failing_candidates_are_rejected_against_the_reference_or_left_unpaired():
    record = _scored([(PASSAGE + " TODO", "stop"), (PASSAGE + " FIXME TODO", "stop")], PASSAGE,
                     ["regex-forbid:TODO", "regex-forbid:FIXME"])
    pairs = make_pairs(record, PairConfig(dedup_threshold=100)).pairs
    assert [(p.chosen_source, p.reason, p.rejected_index) for p in pairs] == [
        ("reference", "rejected_failed_check", 1), ("reference", "rejected_failed_check", 0)]  # most failures first
    assert pairs[0].rejected_scores.failed_checks == ["regex-forbid:TODO", "regex-forbid:FIXME"]
    only_candidates = make_pairs(record, PairConfig(chosen_from="candidates"))
    assert (only_candidates.pairs, only_candidates.no_pair_reason) == ([], "no_candidate_passing_checks")
    # without a reference, a passing candidate that stopped is chosen against the failing one
    free = _scored([('{"a": 1', "length"), ('{"a": 1}', "stop")], None, ["json"])
    [pair] = make_pairs(free, PairConfig()).pairs
    assert (pair.chosen, pair.rejected, pair.reason) == ('{"a": 1}', '{"a": 1', "rejected_failed_check")


def test_eval_reports_failure_rate_per_check_with_intervals_and_report_plots_it(schema, tmp_path):
    from dpominer.evaluate import wilson

    before = write_jsonl(tmp_path / "before.jsonl", [
        candidate_record("a", [("no json", "stop"), ('{"name": "x"}', "stop")], reference=None),
        candidate_record("b", [(LOOP, "length"), (GOOD, "stop")], reference=None)])
    after = write_jsonl(tmp_path / "after.jsonl", [
        candidate_record("a", [(GOOD, "stop"), ('{"name": "x"}', "stop")], reference=None),
        candidate_record("b", [(GOOD, "stop"), (GOOD, "stop")], reference=None)])
    out = tmp_path / "eval"
    result = run("eval", "-o", out, "--candidates", before, "--candidates", after, "--check", "json",
                 "--check", f"json-schema:{schema}")
    assert result.exit_code == 0, result.output
    data = json.loads((out / "eval.json").read_text())
    first, second = data["models"]
    assert first["checks"]["json"] == {"failed": 2, "checked": 4, "failure_rate": 0.5,
                                       "failure_ci95": pytest.approx(list(wilson(2, 4)))}
    assert first["checks"]["json-schema"]["failure_rate"] == 0.75 and second["checks"]["json-schema"]["failed"] == 1
    assert data["changes"][1]["check_changes"] == {"json": -1.0, "json-schema": pytest.approx(-2 / 3)}
    assert first["failed_any_check_rate"] == 0.75 and data["checks"][0] == {"spec": "json"}
    assert "failure checks" in result.output and "json-schema" in result.output

    page = tmp_path / "report.html"
    result = run("report", out, "-o", page)
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert 'alt="Failure rate per check per model" data-points="6"' in html  # 2 models × (loops + 2)
    assert "<th>fails json-schema (95 % CI)</th>" in html and "<td>75.0% (" in html


PARITY_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["package", "version", "architecture", "maintainer", "section", "installed_size_kb", "depends"],
    "properties": {
        "package": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.-]+$"},
        "version": {"type": "string", "pattern": "^([0-9]+:)?[0-9][A-Za-z0-9.+~-]*$"},
        "architecture": {"type": ["string", "null"], "maxLength": 8},
        "maintainer": {"type": "object", "required": ["name", "email"], "additionalProperties": False,
                       "properties": {"name": {"type": "string", "minLength": 1},
                                      "email": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"}}},
        "section": {"type": "string"}, "summary": True,
        "installed_size_kb": {"type": "integer", "minimum": 0, "exclusiveMaximum": 10**6},
        "depends": {"type": "array", "minItems": 1, "maxItems": 4, "uniqueItems": True,
                    "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9+.-]+$"}}}}


def _mutations(seed: int, count: int):
    """Valid instances of the example schema, each with one random edit somewhere (or none)."""
    import random

    rng = random.Random(seed)
    odd = [None, True, 0, 1.0, 1.5, -3, 10**6, "", "Bad Name", "zlib", "amd64-long", [], ["a", "a"], ["a", "b"], {},
           {"name": "x"}, "1.0-2", "x@y"]
    for _ in range(count):
        value = {"package": "zlib1g", "version": "1:1.3-2", "architecture": "all", "section": "libs",
                 "maintainer": {"name": "Jo", "email": "jo@d.org"}, "installed_size_kb": 7,
                 "depends": ["libc6", "libz"], "summary": "s"}
        node, key = value, rng.choice([*value, "extra"])
        if isinstance(value.get(key), (dict, list)) and value[key] and rng.random() < 0.6:
            node = value[key]
            key = rng.randrange(len(node) + 1) if isinstance(node, list) else rng.choice([*node, "x"])
        roll = rng.random()
        if roll < 0.2 and isinstance(node, dict):
            node.pop(key, None)
        elif roll < 0.9:
            if isinstance(node, list):
                node.insert(min(key, len(node)), rng.choice(odd))
            else:
                node[key] = rng.choice(odd)
        yield value


def test_fast_schema_verdicts_agree_with_jsonschema_and_its_why_is_a_jsonschema_error(tmp_path):
    import jsonschema

    from dpominer.schema_fast import compile_schema

    schema = tmp_path / "parity.json"
    schema.write_text(json.dumps(PARITY_SCHEMA))
    fast, reference = compile_schema(PARITY_SCHEMA), jsonschema.Draft202012Validator(PARITY_SCHEMA)
    [schema_check] = compiled((CheckSpec(spec=f"json-schema:{schema}"),))
    verdicts = []
    for value in _mutations(0, 400):
        valid = reference.is_valid(value)
        assert fast.is_valid(value) == valid, value
        verdicts.append(valid)
        why = schema_check.fn(json.dumps(value), {})
        assert (why is None) == valid
        if why is not None:  # the path and rule named are among the errors jsonschema itself reports
            path, _, rest = why.partition(": ")
            assert (path, rest.split(" — ")[0]) in {(e.json_path, e.validator) for e in reference.iter_errors(value)}
    assert 20 < sum(verdicts) < 380  # both outcomes exercised


def test_schemas_outside_the_fast_subset_are_validated_by_jsonschema_alone(tmp_path):
    from dpominer.schema_fast import compile_schema

    refs = {"$defs": {"name": {"type": "string"}}, "type": "object", "properties": {"n": {"$ref": "#/$defs/name"}}}
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"n": {"type": "integer", "format": "email"}}}
    assert compile_schema(refs) is None and compile_schema(draft7) is None
    assert compile_schema({"type": "object", "properties": {"a": {"enum": [1, 2]}}}) is None
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    assert check(f"json-schema:{path}", '{"n": 3}') == (False, "$.n: type — 3 is not of type 'string'")
    assert check(f"json-schema:{path}", '{"n": "x"}') == (True, None)


def test_pair_runs_checks_on_unscored_input_from_flags_or_its_config(tmp_path):
    rows = [candidate_record("a", [('{"a": 1}', "stop"), ('{"a": 1', "length")], reference=None),
            candidate_record("b", [("oops", "stop")], reference=None)]
    cands = write_jsonl(tmp_path / "c.jsonl", rows)
    result = run("pair", cands, "-o", tmp_path / "p.jsonl", "--check", "json", "--stats-json", tmp_path / "s.json")
    assert result.exit_code == 0, result.output
    [pair] = read_jsonl(tmp_path / "p.jsonl")
    assert (pair["chosen"], pair["rejected"], pair["reason"]) == ('{"a": 1}', '{"a": 1', "rejected_failed_check")
    assert pair["rejected_scores"]["failed_checks"] == ["json"]
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["documents_without_pair"] == {"no_candidate_passing_checks": 1}
    assert stats["checks"] == {"json": {"checked": 3, "failed": 2}}
    config = tmp_path / "pair.toml"
    config.write_text('[[score.checks]]\nspec = "regex-require:^\\\\{"\n')
    result = run("pair", cands, "-o", tmp_path / "q.jsonl", "--config", config)
    assert result.exit_code == 0, result.output
    assert [p["rejected_scores"]["failed_checks"] for p in read_jsonl(tmp_path / "q.jsonl")] == []  # all start with {
    assert json.loads((tmp_path / "q.jsonl.meta.json").read_text())["config"]["score"]["checks"] == [
        {"spec": "regex-require:^\\{", "name": None}]


def test_a_schema_file_is_an_input_no_output_may_replace(schema, tmp_path):
    cands = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [(GOOD, "stop")], reference=None)])
    in_eval_folder = tmp_path / "ev" / "eval.json"  # what `eval -o ev` writes
    in_eval_folder.parent.mkdir()
    in_eval_folder.write_bytes(schema.read_bytes())
    before = schema.read_bytes()
    for args, used in ((("score", cands, "-o", schema), schema),
                       (("pair", cands, "-o", tmp_path / "p.jsonl", "--stats-json", schema), schema),
                       (("eval", "--candidates", cands, "-o", in_eval_folder.parent), in_eval_folder)):
        result = run(*args, "--check", f"json-schema:{used}")
        assert result.exit_code == 1, (args, result.output)
        assert "would replace the input" in result.output and str(used) in result.output.replace("\n", "")
        assert used.read_bytes() == before


def test_a_user_check_that_raises_in_a_worker_process_names_its_line(tmp_path, monkeypatch):
    """`score --workers 2` runs checks in a process pool: the error still names the record's line."""
    monkeypatch.chdir(tmp_path)
    name = _module(tmp_path, "chk_user_pool", """
        def picky(text, document):
            if document["id"] == "explode":
                raise KeyError("boom")
            return None
    """)
    rows = [candidate_record(f"d{i}", [("fine", "stop")], reference=None) for i in range(3)]
    rows.insert(2, candidate_record("explode", [("x", "stop")], reference=None))
    cands = write_jsonl(tmp_path / "c.jsonl", rows)
    for workers in ("1", "2"):
        result = run("score", cands, "-o", tmp_path / "s.jsonl", "--workers", workers, "--skip-invalid",
                     "--check", f"py:{name}:picky")
        assert result.exit_code == 1 and not (tmp_path / "s.jsonl").exists()
        assert result.output.strip() == (f"error: {cands}:3: check py:{name}:picky: KeyError: 'boom' "
                                         "(document 'explode')")


def test_check_errors_print_the_values_as_written(tmp_path):
    """--check is a row of the option table: a bad value is named with the flag, an error about the list
    names the flag; the line shows ``:two`` and ``[[checks]]`` as typed (not an emoji, not markup)."""
    cands = write_jsonl(tmp_path / "c.jsonl", [candidate_record("a", [(GOOD, "stop")])])
    result = run("score", cands, "-o", tmp_path / "s.jsonl", "--check", "json", "--check", "max-length-ratio:two")
    assert result.exit_code == 1
    assert result.output.strip() == "error: --check max-length-ratio:two: max-length-ratio: 'two' is not a number"
    result = run("pair", cands, "-o", tmp_path / "p.jsonl", "--check", "json", "--check", "json")
    assert result.exit_code == 1
    assert result.output.startswith("error: --check: two checks named 'json'; give one a 'name' in [[checks]]")
