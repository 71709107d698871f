from __future__ import annotations

import pytest
from conftest import write_jsonl

from dpominer.jsonl import InputError, atomic_output, iter_jsonl
from dpominer.records import CandidateRecord, Document


def test_reads_documents_and_gives_missing_ids_a_stable_hash(tmp_path):
    rows = [{"prompt": "hello"}, "", {"id": "b", "messages": [{"role": "user", "content": "x"}]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    docs = list(iter_jsonl(path, Document))
    assert [d.conversational for d in docs] == [False, True]
    again = list(iter_jsonl(path, Document))
    assert docs[0].id == again[0].id and docs[0].id.startswith("doc-")  # same in every process
    assert docs[0].id != list(iter_jsonl(write_jsonl(tmp_path / "e.jsonl", [{"prompt": "hell0"}]), Document))[0].id


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": "a", "prompt": "x"', "invalid JSON"),
    ('["a", "b"]', "expected a JSON object, got list"),
    ('{"id": "a"}', "needs exactly one of 'prompt'"),
    ('{"id": "a", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}', "needs exactly one of"),
    ('{"id": "a", "prompt": 3}', "prompt: Input should be a valid string"),
    ('{"id": "a", "messages": []}', "'messages' is empty"),
    ('{"id": "a", "messages": [{"role": "user"}]}', "messages.0.content: Field required"),
    ('{"id": "first", "prompt": "again"}', "duplicate id 'first'"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "first", "prompt": "x"}, line])
    with pytest.raises(InputError) as err:
        list(iter_jsonl(path, Document))
    assert str(err.value).startswith(f"{path}:2: ")
    assert message in str(err.value)


def test_invalid_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"d.jsonl:2: invalid UTF-8 at byte 26 of the line"):
        list(iter_jsonl(path, Document))


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl: no records"):
        list(iter_jsonl(empty, Document))
    with pytest.raises(InputError, match="cannot read"):
        list(iter_jsonl(tmp_path / "nope.jsonl", Document))


def test_skip_invalid_counts_and_keeps_going(tmp_path):
    rows = [{"id": "a", "prompt": "x"}, "{oops", {"id": "a", "prompt": "y"}, {"id": "c", "prompt": "z"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    skipped: list[str] = []
    docs = list(iter_jsonl(path, Document, skip_invalid=True, on_skip=skipped.append))
    assert [d.id for d in docs] == ["a", "c"]
    assert [s.split(": ")[0] for s in skipped] == [f"{path}:2", f"{path}:3"]
    all_bad = write_jsonl(tmp_path / "bad.jsonl", ["{oops"])
    with pytest.raises(InputError, match="all 1 non-blank lines are invalid"):
        list(iter_jsonl(all_bad, Document, skip_invalid=True))


def test_candidate_record_rejects_unknown_finish_reason(tmp_path):
    row = {"id": "a", "prompt": "x", "candidates": [{"index": 0, "text": "t", "finish_reason": "timeout"}]}
    with pytest.raises(InputError, match=r":1: candidates.0.finish_reason: Input should be"):
        list(iter_jsonl(write_jsonl(tmp_path / "c.jsonl", [row]), CandidateRecord))


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write(b"partial\n")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind
    with atomic_output(target) as handle:
        handle.write(b"new\n")
    assert target.read_text() == "new\n"
