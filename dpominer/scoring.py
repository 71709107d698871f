"""The `score` stage: candidate records in, the same records with ``degeneration`` and ``fidelity`` out.

The decisions are the pure functions of ``degeneration`` and ``fidelity``; this module streams the file
through them on every core (``workers``), keeping input order, and counts what it saw (``Summary``,
shared with `pair`, which scores on the way). Memory stays flat in the number of documents: a few
chunks of lines in flight plus 8-byte digests of the ids seen, for the duplicate check.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .checks import CheckError, CheckSpec, compiled, resolve_names, run_checks
from .degeneration import DetectorConfig, detect
from .fidelity import FidelityConfig, fidelity_many, word_ratio
from .images import rebase_record
from .omission import OmissionConfig, judge_omission, judged_omission
from .records import (
    Candidate,
    CandidateRecord,
    Degeneration,
    InputError,
    Message,
    Pair,
    atomic_output,
    dumps,
    iter_jsonl,
)
from .workers import LineError, map_jsonl, worker_count


class ScoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    omission: OmissionConfig = Field(default_factory=OmissionConfig)
    rescore: bool = Field(False, description="recompute scores that a record already carries")
    checks: tuple[CheckSpec, ...] = Field((), description="failure checks run on every candidate ([[checks]])")

    @field_validator("checks")
    @classmethod
    def _unique_names(cls, checks: tuple[CheckSpec, ...]) -> tuple[CheckSpec, ...]:
        resolve_names(list(checks))
        return checks


def _side_text(value: str | list[Message]) -> str:
    """A pair side's text: the string, or its messages' text (plain or text parts)."""
    return value if isinstance(value, str) else "".join(m.text for m in value)


def _row_side_text(value: str | list[dict[str, Any]]) -> str:
    """:func:`_side_text` of a written side (message dicts, content a string or text/image parts)."""
    if isinstance(value, str):
        return value
    return "".join(m["content"] if isinstance(m["content"], str) else
                   "".join(part.get("text") or "" for part in m["content"] if part["type"] == "text") for m in value)


@dataclass
class PairLengths:
    """Chosen vs rejected length over the pairs written, in constant memory (characters).

    A pair set whose rejected sides are all longer than their chosen sides teaches length, not loops:
    ``rejected_longer_share`` near 1 is the warning sign."""

    pairs: int = 0
    chosen_chars: int = 0
    rejected_chars: int = 0
    rejected_longer: int = 0
    log_ratio_sum: float = 0.0
    by_reason: dict[str, list[int]] = field(default_factory=dict)  # reason → [pairs, rejected longer]

    def add(self, pair: Pair) -> None:
        self.add_sizes(pair.reason, *self.sizes(pair))

    @staticmethod
    def sizes(pair: Pair) -> tuple[int, int]:
        """(chosen, rejected) characters of a pair's sides."""
        return len(_side_text(pair.chosen)), len(_side_text(pair.rejected))

    @staticmethod
    def sizes_of(chosen: str | list[dict[str, Any]], rejected: str | list[dict[str, Any]]) -> tuple[int, int]:
        """The same for a pair row's sides as `pair` writes them: strings, or one assistant message each."""
        return len(_row_side_text(chosen)), len(_row_side_text(rejected))

    def add_sizes(self, reason: str, chosen: int, rejected: int) -> None:
        """One pair by its reason and its sides' lengths (what a worker process sends back)."""
        self.pairs += 1
        self.chosen_chars += chosen
        self.rejected_chars += rejected
        self.rejected_longer += rejected > chosen
        self.log_ratio_sum += math.log(max(chosen, 1) / max(rejected, 1))
        counts = self.by_reason.setdefault(reason, [0, 0])
        counts[0] += 1
        counts[1] += rejected > chosen

    def as_dict(self) -> dict[str, Any]:
        n = max(self.pairs, 1)
        return {
            "chosen_rejected_ratio": round(self.chosen_chars / max(self.rejected_chars, 1), 4),
            "chosen_rejected_ratio_geomean": round(math.exp(self.log_ratio_sum / n), 4),
            "chosen_chars_mean": round(self.chosen_chars / n, 1),
            "rejected_chars_mean": round(self.rejected_chars / n, 1),
            "rejected_longer_share": round(self.rejected_longer / n, 4),
            "rejected_longer_share_by_reason": {k: round(v[1] / v[0], 4) for k, v in sorted(self.by_reason.items())},
        }


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
    omission: Counter = field(default_factory=Counter)
    lengths: PairLengths = field(default_factory=PairLengths)
    skipped_messages: list[str] = field(default_factory=list)
    judge: dict[str, Any] = field(default_factory=dict)  # set by `score --judge`
    check_failures: Counter = field(default_factory=Counter)  # check name → candidates failing it
    checked: Counter = field(default_factory=Counter)  # check name → candidates it ran on

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
            "omission": dict(self.omission),
            "pairs": self.pairs,
            "pairs_by_reason": dict(self.pairs_by_reason),
            "chosen_source": dict(self.chosen_source),
            "documents_without_pair": dict(self.no_pair),
            **({"pair_lengths": self.lengths.as_dict()} if self.pairs else {}),
            **({"judge": self.judge} if self.judge else {}),
            **({"checks": {name: {"checked": n, "failed": self.check_failures[name]}
                           for name, n in self.checked.items()}} if self.checked else {}),
        }

    def skipped(self, message: str) -> None:
        self.invalid_lines += 1
        if len(self.skipped_messages) < 20:  # keep a few examples, not all of them
            self.skipped_messages.append(message)


def _document(record: CandidateRecord, user_checks: bool) -> dict[str, Any]:
    """What a check function is given as ``document``: the record without its candidates."""
    if user_checks:
        return record.model_dump(exclude={"candidates"}, exclude_none=True)
    return {"id": record.id, "reference": record.reference}


def check_record(record: CandidateRecord, cfg: ScoreConfig) -> None:
    """Run the configured checks on every candidate that lacks one of their results (all with rescore);
    results of checks not configured now are kept. Candidates whose sampling failed are not checked."""
    checks = compiled(cfg.checks)
    names = {c.name for c in checks}
    document = None
    for cand in record.candidates:
        if cand.finish_reason == "error":
            continue
        have = {r.name for r in cand.checks or ()}
        if not cfg.rescore and names <= have:
            continue
        if document is None:
            document = _document(record, any(c.user for c in checks))
        kept = [r for r in cand.checks or () if r.name not in names]
        cand.checks = kept + run_checks(checks, cand.text, document)


class _Scoring:
    """One record's scoring: detection, then fidelity and omission, with what it computed by candidate
    text for the candidates that repeat an earlier one.

    Sampling repeats itself (at T 0.5, 21 % of a SmolLM2 run's candidates equal an earlier candidate of
    their document; at T 0 all do), and detection and fidelity are pure: a candidate with an earlier
    one's text, finish reason, token ids and log-probs gets a copy of its results (the Degeneration
    shallow-copied: its ``signals`` dict is shared) instead of computing them again."""

    def __init__(self, record: CandidateRecord, cfg: ScoreConfig):
        self.record, self.cfg = record, cfg
        self.detected: dict[str, tuple[Candidate, Degeneration]] = {}

    def detect(self) -> None:
        for cand in self.record.candidates:
            if cand.degeneration is None or self.cfg.rescore:
                cand.degeneration = self._detected(cand)

    def _detected(self, cand: Candidate) -> Degeneration:
        twin = self.detected.get(cand.text)
        if twin is not None and (twin[0].finish_reason, twin[0].token_ids, twin[0].token_logprobs) == (
                cand.finish_reason, cand.token_ids, cand.token_logprobs):
            return twin[1].model_copy()
        found = detect(cand.text, token_ids=cand.token_ids, finish_reason=cand.finish_reason,
                       reference=self.record.reference, token_logprobs=cand.token_logprobs, cfg=self.cfg.detector)
        self.detected.setdefault(cand.text, (cand, found))
        return found

    def measure(self) -> None:
        """Fidelity (coverage included) and the omission verdict, given a reference; after :meth:`detect`.
        Each distinct text is measured once, all of them together (:func:`fidelity.fidelity_many`)."""
        reference, cfg = self.record.reference, self.cfg
        if reference is None:
            return
        texts = list(dict.fromkeys(cand.text for cand in self.record.candidates if self._unmeasured(cand)))
        measured = dict(zip(texts, fidelity_many(texts, reference, cfg.fidelity), strict=True))
        for cand in self.record.candidates:
            got = None  # (scores, word ratio): the omission verdict reuses fidelity's word counts
            if self._unmeasured(cand):
                got = measured[cand.text]
                cand.fidelity = dict(got[0])
            if cand.finish_reason != "error" and (cand.omission is None or cfg.rescore):
                ratio = got[1] if got else word_ratio(cand.text, reference, cfg.fidelity)
                cand.omission = judge_omission(cand.fidelity["coverage"], cand.finish_reason,
                                               cand.degeneration.verdict == "degenerate", cfg.omission, ratio)

    def _unmeasured(self, cand: Candidate) -> bool:
        return cand.fidelity is None or "coverage" not in cand.fidelity or self.cfg.rescore


def score_records(records: list[CandidateRecord], cfg: ScoreConfig) -> list[CheckError | None]:
    """:func:`score_record` on many records, stage by stage: every record's checks, then every
    candidate's detection, then fidelity and omission. Each stage's code stays in the CPU's caches
    from one record to the next (about a tenth faster than record by record on short candidates).
    Per record, the CheckError a user check raised (that record is left unscored) or None."""
    errors: list[CheckError | None] = []
    for record in records:
        try:
            if cfg.checks:
                check_record(record, cfg)
            errors.append(None)
        except CheckError as exc:
            errors.append(exc)
    scorings = [_Scoring(record, cfg) for record, error in zip(records, errors, strict=True) if error is None]
    for scoring in scorings:
        scoring.detect()
    for scoring in scorings:
        scoring.measure()
    return errors


def score_record(record: CandidateRecord, cfg: ScoreConfig) -> CandidateRecord:
    """Annotate every candidate with ``degeneration``, ``checks`` (when configured) and, given a
    reference, ``fidelity`` (coverage included) and ``omission``. A user check that raises is a
    CheckError."""
    [error] = score_records([record], cfg)
    if error is not None:
        raise error
    return record


def judge_record_omissions(record: CandidateRecord, scale: int, cfg: ScoreConfig) -> None:
    """Without a reference, the judge's completeness criterion gives the ``omission`` verdict."""
    if record.reference is not None:
        return
    for cand in record.candidates:
        if cand.judge and "score" in cand.judge and (cand.omission is None or cfg.rescore):
            degenerate = cand.degeneration is not None and cand.degeneration.verdict == "degenerate"
            cand.omission = judged_omission(cand.judge, scale, cand.finish_reason, degenerate, cfg.omission)


# finish reason, verdict, kind, CER, omission verdict, (check name, passed) per check run
CandidateFacts = tuple[str, str | None, str | None, float | None, str | None, tuple[tuple[str, bool], ...]]


def facts(record: CandidateRecord) -> list[CandidateFacts]:
    """What the summary counts of a scored record's candidates (small: it crosses process boundaries)."""
    return [(c.finish_reason or "unknown", c.degeneration.verdict if c.degeneration else None,
             c.degeneration.kind if c.degeneration else None,
             c.fidelity["cer"] if c.fidelity and "cer" in c.fidelity else None,
             c.omission.verdict if c.omission is not None else None,
             tuple((r.name, r.passed) for r in c.checks or ())) for c in record.candidates]


def count_facts(summary: Summary, candidates: list[CandidateFacts]) -> None:
    summary.documents += 1
    for finish_reason, verdict, kind, cer, omission, checks in candidates:
        summary.candidates += 1
        summary.finish_reasons[finish_reason] += 1
        if verdict is not None:
            summary.verdicts[verdict] += 1
            if kind:
                summary.kinds[kind] += 1
        if cer is not None:
            summary.cer_sum += cer
            summary.cer_count += 1
        if omission is not None:
            summary.omission[omission] += 1
        for name, passed in checks:
            summary.checked[name] += 1
            summary.check_failures[name] += not passed


def count_record(summary: Summary, record: CandidateRecord) -> None:
    count_facts(summary, facts(record))


Progress = Callable[[bytes], None]  # called with each raw input line


def read_records(path: Path, skip_invalid: bool, summary: Summary, progress: Progress | None, check=None):
    return iter_jsonl(path, CandidateRecord, skip_invalid=skip_invalid, on_skip=summary.skipped,
                      on_line=progress, check=check)


def scored_chunk(records: list[CandidateRecord], cfg: ScoreConfig) -> list[LineError | None]:
    """:func:`score_records` in a worker: a user check's failure stops the run at its record's line."""
    return [None if error is None else LineError(f"{error} (document {record.id!r})")
            for record, error in zip(records, score_records(records, cfg), strict=True)]


def _score_chunk(records: list[CandidateRecord], cfg: ScoreConfig, src_dir: Path,
                 dst_dir: Path) -> list[tuple[bytes, list[CandidateFacts]] | LineError]:
    return [error or (dumps(rebase_record(record.model_dump(exclude_none=True), src_dir, dst_dir)), facts(record))
            for record, error in zip(records, scored_chunk(records, cfg), strict=True)]


def scored_records(path: Path, cfg: ScoreConfig, skip_invalid: bool, summary: Summary,
                   progress: Progress | None, check=None) -> Iterator[CandidateRecord]:
    """Read and score each record in this process (`score --judge`); a user check's failure stops the
    run as ``path:LINE: check …``."""
    line = 0

    def on_line(raw: bytes) -> None:
        nonlocal line
        line += 1
        if progress is not None:
            progress(raw)

    for record in read_records(path, skip_invalid, summary, on_line, check):
        try:
            yield score_record(record, cfg)
        except CheckError as exc:
            raise InputError(f"{path}:{line}: {exc} (document {record.id!r})") from None


def run_score(src: Path, dst: Path, cfg: ScoreConfig, *, skip_invalid: bool = False,
              progress: Progress | None = None, workers: int = 1) -> Summary:
    """Score every record of ``src`` into ``dst`` on ``workers`` processes (0: all cores), in input order."""
    summary = Summary()
    with atomic_output(dst) as out:
        work = partial(_score_chunk, cfg=cfg, src_dir=src.parent, dst_dir=dst.parent)
        for line, candidates in map_jsonl(src, CandidateRecord, work,
                                          workers=worker_count(workers, src), skip_invalid=skip_invalid,
                                          on_skip=summary.skipped, on_line=progress):
            count_facts(summary, candidates)
            out.write(line)
    return summary
