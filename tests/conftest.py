from __future__ import annotations

import json
from pathlib import Path

import pytest

PASSAGE = (
    "By default, all communication is in bytes, and therefore any input should be bytes, and the return "
    "value will be bytes. If in text mode, any input should be a string, and the return value will be a "
    "string decoded according to locale encoding."
)
LOOP = PASSAGE[:60] + " or if any input should be a string decoded according to locale encoding," * 12 + " or if"


def write_jsonl(path: Path, rows: list) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def candidate_record(doc_id: str, texts: list[tuple[str, str]], reference: str | None = PASSAGE,
                     messages: bool = False) -> dict:
    record = {"id": doc_id, "model": "test", "sampling": {"temperature": 0.7},
              "candidates": [{"index": i, "text": t, "finish_reason": f} for i, (t, f) in enumerate(texts)]}
    if messages:
        record["messages"] = [{"role": "user", "content": "Transcribe: " + (reference or "")}]
    else:
        record["prompt"] = "Transcribe: " + (reference or "")
    if reference is not None:
        record["reference"] = reference
    return record


@pytest.fixture
def candidates_file(tmp_path: Path) -> Path:
    near = PASSAGE.replace("bytes", "bites", 1)
    rows = [
        candidate_record("clean-and-loop", [(PASSAGE, "stop"), (LOOP, "length"), (near, "stop")]),
        candidate_record("all-loops", [(LOOP, "length"), (LOOP + " or", "length")]),
        candidate_record("all-clean", [(PASSAGE, "stop"), (near, "stop")]),
    ]
    return write_jsonl(tmp_path / "candidates.jsonl", rows)
