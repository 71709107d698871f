"""`dpominer merge`: join the outputs of `sample --shard I/N` runs (SLURM arrays, many GPU boxes).

Two passes, so a merge that fails writes nothing: the first reads every shard (and ``--docs``), finds
duplicate ids — an id whose records differ between shards is an error naming both places — and the
documents no shard produced; the second copies each id's record once, line for line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .images import rebase_record
from .jsonl import InputError, atomic_output, dumps, iter_jsonl
from .records import CandidateRecord, Document


@dataclass
class MergeSummary:
    records: int = 0
    duplicates: int = 0
    missing: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return self.__dict__.copy()

    def problems(self) -> str | None:
        """What ``--strict`` refuses, as one line (None: nothing)."""
        parts = []
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate ids (e.g. {', '.join(self.duplicate_ids[:3])})")
        if self.missing:
            parts.append(f"{self.missing} documents missing (e.g. {', '.join(self.missing_ids[:3])})")
        return "; ".join(parts) or None


def _digest(text: str | bytes, size: int = 8) -> bytes:
    return hashlib.blake2b(text.encode() if isinstance(text, str) else text, digest_size=size).digest()


def _canonical(raw: bytes) -> bytes:
    """The record's content, whatever its key order or spacing."""
    return _digest(orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS), 16)


def check(inputs: list[Path], docs: Path | None = None) -> MergeSummary:
    """Pass one: count records, duplicates and missing documents; raise on an id whose records differ."""
    summary = MergeSummary()
    seen: dict[bytes, tuple[bytes, int, int]] = {}  # id digest → (content digest, shard, line)
    where = {"line": 0}

    def count(raw: bytes) -> None:
        where["line"] += 1
        where["raw"] = raw

    for shard, path in enumerate(inputs):
        where["line"] = 0
        for record in iter_jsonl(path, CandidateRecord, on_line=count, allow_empty=True):  # a shard may be empty
            key, content = _digest(record.id), _canonical(where["raw"])
            if key not in seen:
                seen[key] = (content, shard, where["line"])
                summary.records += 1
                continue
            first_content, first_shard, first_line = seen[key]
            if content != first_content:
                raise InputError(f"{path}:{where['line']}: id {record.id!r} is also in {inputs[first_shard]}:"
                                 f"{first_line} with different content; which one is right? remove one and merge again")
            summary.duplicates += 1
            if len(summary.duplicate_ids) < 10:
                summary.duplicate_ids.append(record.id)
    if docs is not None:
        for doc in iter_jsonl(docs, Document):
            if _digest(doc.id) not in seen:
                summary.missing += 1
                if len(summary.missing_ids) < 10:
                    summary.missing_ids.append(doc.id)
    return summary


def write(inputs: list[Path], output: Path) -> None:
    """Pass two: each id's first record, copied as it is (not re-serialised)."""
    seen: set[bytes] = set()
    raw = [b""]

    def remember(line: bytes) -> None:
        raw[0] = line

    with atomic_output(output) as out:
        for path in inputs:
            for record in iter_jsonl(path, CandidateRecord, on_line=remember, allow_empty=True):
                key = _digest(record.id)
                if key in seen:
                    continue
                seen.add(key)
                if record.images and path.parent.resolve() != output.parent.resolve():
                    # image paths resolve from a file's folder: rewritten for the merged file's
                    out.write(dumps(rebase_record(record.model_dump(exclude_none=True), path.parent, output.parent)))
                else:
                    out.write(raw[0] if raw[0].endswith(b"\n") else raw[0] + b"\n")


def merge(inputs: list[Path], output: Path, docs: Path | None = None, strict: bool = False) -> MergeSummary:
    """Check, then write; with ``strict`` any duplicate or missing document fails before anything is written."""
    if strict and docs is None:
        raise InputError("--strict: needs --docs, or missing documents cannot be seen")
    summary = check(inputs, docs)
    if strict and (problems := summary.problems()):
        raise InputError(f"--strict: {problems}; nothing written to {output}")
    write(inputs, output)
    return summary
