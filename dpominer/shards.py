"""`dpominer merge`: join the outputs of `sample --shard I/N` runs (SLURM arrays, many GPU boxes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from .images import rebase_record
from .records import CandidateRecord, Document, atomic_output, dumps, iter_jsonl


@dataclass
class MergeSummary:
    records: int = 0
    duplicates: int = 0
    missing: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _digest(doc_id: str) -> bytes:
    return hashlib.blake2b(doc_id.encode(), digest_size=8).digest()


def merge(inputs: list[Path], output: Path, docs: Path | None = None) -> MergeSummary:
    """Concatenate shard outputs, keeping the first record of an id seen twice; with ``docs``,
    also report the documents no shard produced."""
    summary = MergeSummary()
    seen: set[bytes] = set()
    raw = [b""]  # the line each record came from: copied as it is, not re-serialised

    def remember(line: bytes) -> None:
        raw[0] = line

    with atomic_output(output) as out:
        for path in inputs:
            for record in iter_jsonl(path, CandidateRecord, on_line=remember, allow_empty=True):  # a shard may be empty
                digest = _digest(record.id)
                if digest in seen:
                    summary.duplicates += 1
                    if len(summary.duplicate_ids) < 10:
                        summary.duplicate_ids.append(record.id)
                    continue
                seen.add(digest)
                summary.records += 1
                if record.images and path.parent.resolve() != output.parent.resolve():
                    # image paths resolve from a file's folder: rewritten for the merged file's
                    out.write(dumps(rebase_record(record.model_dump(exclude_none=True), path.parent, output.parent)))
                else:
                    out.write(raw[0] if raw[0].endswith(b"\n") else raw[0] + b"\n")
    if docs is not None:
        for doc in iter_jsonl(docs, Document):
            if _digest(doc.id) not in seen:
                summary.missing += 1
                if len(summary.missing_ids) < 10:
                    summary.missing_ids.append(doc.id)
    return summary
