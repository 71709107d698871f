"""The `score` and `pair` stages: stream candidate records in, scored records or pairs out.

I/O lives here and in the CLI; the decisions are the pure functions of ``degeneration``,
``fidelity`` and ``pairing``. Both stages hold one record at a time (plus 8-byte digests of the ids
seen, for the duplicate check), so memory stays flat in the number of documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .degeneration import DetectorConfig, detect
from .fidelity import FidelityConfig, fidelity
from .images import rebase_record
from .pairing import PairConfig, make_pairs
from .records import CandidateRecord, atomic_output, dumps, iter_jsonl


class ScoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    rescore: bool = Field(False, description="recompute scores that a record already carries")


class PairRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: PairConfig = Field(default_factory=PairConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)


@dataclass
class Summary:
    """Counts shown at the end of a stage and written to its .meta.json (constant size)."""

    documents: int = 0
    candidates: int = 0
    invalid_lines: int = 0
    verdicts: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    finish_reasons: Counter = field(default_factory=Counter)
    pairs: int = 0
    pairs_by_reason: Counter = field(default_factory=Counter)
    chosen_source: Counter = field(default_factory=Counter)
    no_pair: Counter = field(default_factory=Counter)
    cer_sum: float = 0.0
    cer_count: int = 0
    skipped_messages: list[str] = field(default_factory=list)
    judge: dict[str, Any] = field(default_factory=dict)  # set by `score --judge`

    @property
    def degeneration_rate(self) -> float:
        return self.verdicts["degenerate"] / self.candidates if self.candidates else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "candidates": self.candidates,
            "invalid_lines": self.invalid_lines,
            "degeneration_rate": round(self.degeneration_rate, 6),
            "verdicts": dict(self.verdicts),
            "kinds": dict(self.kinds),
            "finish_reasons": dict(self.finish_reasons),
            "mean_cer": round(self.cer_sum / self.cer_count, 6) if self.cer_count else None,
            "pairs": self.pairs,
            "pairs_by_reason": dict(self.pairs_by_reason),
            "chosen_source": dict(self.chosen_source),
            "documents_without_pair": dict(self.no_pair),
            **({"judge": self.judge} if self.judge else {}),
        }

    def skipped(self, message: str) -> None:
        self.invalid_lines += 1
        if len(self.skipped_messages) < 20:  # keep a few examples, not all of them
            self.skipped_messages.append(message)


def score_record(record: CandidateRecord, cfg: ScoreConfig) -> CandidateRecord:
    """Annotate every candidate with ``degeneration`` and, given a reference, ``fidelity``."""
    for cand in record.candidates:
        if cand.degeneration is None or cfg.rescore:
            cand.degeneration = detect(cand.text, token_ids=cand.token_ids, finish_reason=cand.finish_reason,
                                       reference=record.reference, cfg=cfg.detector)
        if record.reference is not None and (cand.fidelity is None or cfg.rescore):
            cand.fidelity = fidelity(cand.text, record.reference, cfg.fidelity)
    return record


def count_record(summary: Summary, record: CandidateRecord) -> None:
    summary.documents += 1
    for cand in record.candidates:
        summary.candidates += 1
        summary.finish_reasons[cand.finish_reason or "unknown"] += 1
        if cand.degeneration is not None:
            summary.verdicts[cand.degeneration.verdict] += 1
            if cand.degeneration.kind:
                summary.kinds[cand.degeneration.kind] += 1
        if cand.fidelity and "cer" in cand.fidelity:
            summary.cer_sum += cand.fidelity["cer"]
            summary.cer_count += 1


Progress = Callable[[bytes], None]  # called with each raw input line


def read_records(path: Path, skip_invalid: bool, summary: Summary, progress: Progress | None, check=None):
    return iter_jsonl(path, CandidateRecord, skip_invalid=skip_invalid, on_skip=summary.skipped,
                      on_line=progress, check=check)


class _OneForm:
    """TRL reads a pairs file in one form: reject a record whose prompt form differs from the first."""

    def __init__(self) -> None:
        self.conversational: bool | None = None

    def __call__(self, record: CandidateRecord) -> None:
        if self.conversational is None:
            self.conversational = record.conversational
        elif record.conversational != self.conversational:
            have, got = ("messages", "prompt") if self.conversational else ("prompt", "messages")
            raise ValueError(f"a '{got}' record in a file of '{have}' records; pairs need one form per file")


def run_score(src: Path, dst: Path, cfg: ScoreConfig, *, skip_invalid: bool = False,
              progress: Progress | None = None) -> Summary:
    summary = Summary()
    with atomic_output(dst) as out:
        for record in read_records(src, skip_invalid, summary, progress):
            score_record(record, cfg)
            count_record(summary, record)
            out.write(dumps(rebase_record(record.model_dump(exclude_none=True), src.parent, dst.parent)))
    return summary


def run_pair(src: Path, dst: Path, cfg: PairRunConfig, *, skip_invalid: bool = False,
             progress: Progress | None = None) -> Summary:
    summary = Summary()
    with atomic_output(dst) as out:
        for record in read_records(src, skip_invalid, summary, progress, check=_OneForm()):
            score_record(record, cfg.score)
            count_record(summary, record)
            outcome = make_pairs(record, cfg.policy)
            if outcome.no_pair_reason:
                summary.no_pair[outcome.no_pair_reason] += 1
            for pair in outcome.pairs:
                summary.pairs += 1
                summary.pairs_by_reason[pair.reason] += 1
                summary.chosen_source[pair.chosen_source] += 1
                out.write(dumps(rebase_record(pair.model_dump(exclude_none=True), src.parent, dst.parent)))
    return summary
