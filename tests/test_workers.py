"""score and pair on several processes: the same bytes, counts and errors as on one, in input order."""

from __future__ import annotations

import json

import pytest
from conftest import LOOP, PASSAGE, candidate_record, write_jsonl

from dpominer import workers
from dpominer.jsonl import InputError
from dpominer.pairing import PairRunConfig, run_pair
from dpominer.scoring import ScoreConfig, run_score


def _rows(n: int) -> list:
    near = PASSAGE.replace("bytes", "bites", 1)
    rows = []
    for i in range(n):
        texts = [(PASSAGE[: 40 + i], "stop"), (LOOP[i:], "length"), (near, "stop"), (PASSAGE, "stop")][: 2 + i % 3]
        rows.append(candidate_record(f"d{i}", texts, reference=None if i % 7 == 3 else PASSAGE))
    return rows


def test_two_workers_write_what_one_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "CHUNK_BYTES", 3000)  # many chunks, so order across workers matters
    rows = _rows(60)
    rows[10] = "{not json"
    rows[20] = json.dumps(candidate_record("d5", [(PASSAGE, "stop")]))  # a duplicate id
    rows[30] = json.dumps(candidate_record("m", [(PASSAGE, "stop"), (LOOP, "length")], messages=True))
    rows.insert(40, "")
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    for run, cfg in ((run_score, ScoreConfig()), (run_pair, PairRunConfig())):
        outputs = []
        for n in (1, 2):
            dst = tmp_path / f"{run.__name__}-{n}.jsonl"
            summary = run(src, dst, cfg, skip_invalid=True, workers=n)
            outputs.append((dst.read_bytes(), summary.as_dict(), summary.skipped_messages))
        assert outputs[0] == outputs[1]
        skipped = outputs[0][2]
        assert [m.split(": ")[0] for m in skipped][:2] == [f"{src}:11", f"{src}:21"]
    assert "pairs need one form per file" in skipped[2] and skipped[2].startswith(f"{src}:31:")


def test_a_bad_line_stops_every_worker_count_the_same_way_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(workers, "CHUNK_BYTES", 3000)
    rows = _rows(40)
    rows[25] = json.dumps({"id": "x", "prompt": "p", "candidates": [{"index": 0, "text": "t", "finish_reason": "?"}]})
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    messages = []
    for n in (1, 2):
        dst = tmp_path / f"p{n}.jsonl"
        with pytest.raises(InputError) as err:
            run_pair(src, dst, PairRunConfig(), workers=n)
        messages.append(str(err.value))
        assert not dst.exists()
    assert messages[0] == messages[1] and messages[0].startswith(f"{src}:26: candidates.0.finish_reason")


def test_auto_uses_one_process_for_small_inputs(tmp_path):
    small = write_jsonl(tmp_path / "c.jsonl", _rows(3))
    assert workers.worker_count(0, small) == 1 and workers.worker_count(3, small) == 3


def test_the_cycle_collector_is_restored_after_an_in_process_run(tmp_path):
    import gc

    before = gc.get_threshold()
    src = write_jsonl(tmp_path / "c.jsonl", _rows(5))
    run_pair(src, tmp_path / "p.jsonl", PairRunConfig(), workers=1)
    assert gc.get_threshold() == before
