"""The `pair` stage: from each document's scored candidates to TRL-compatible preference pairs.

The policy (``make_pairs``) is pure; ``run_pair`` streams a candidates file through scoring and the
policy on every core, in input order.

Default policy (``PairConfig``):

* **chosen** — the best clean candidate (lowest CER; without a reference the best judge score, or a
  clean candidate that stopped on its own), or the reference when no candidate is clean and good
  enough (``chosen_from="auto"``). ``candidates`` never uses the reference, ``reference`` always does.
* **rejected** — degenerate candidates, candidates that fail a check (``score --check``; most failed
  checks first; never chosen) and *omissions* (candidates that stopped on their own before
  reproducing the reference, ``omission.verdict == "omission"``; without a reference, by the judge's
  completeness), taken in turn — a loop, a failed check, an omission, a loop, … — so that a document
  with several kinds gives pairs of each and the pair set does not only ever reject the longer side
  (which teaches the model to stop early, not to avoid loops); most severe loop / lowest coverage
  first. A candidate counts as the first of these kinds it is (degenerate, then failed check, then
  omission). Then candidates clearly worse than the chosen one: CER higher by at least
  ``min_margin`` or, ranked by the judge (``score_by``), a judge score lower by at least
  ``min_judge_margin``. Suspect candidates are never chosen and only rejected as worse; candidates
  whose judging failed are neither chosen nor rejected as worse. Near-duplicates collapse to one
  (rapidfuzz ratio). An omission is never chosen.
* at most ``max_pairs_per_doc`` pairs per document.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from rapidfuzz import fuzz

from .images import dump_refs, rebase_record
from .records import Candidate, CandidateRecord, Pair, SideScores, atomic_output, dumps
from .scoring import CandidateFacts, PairLengths, Progress, ScoreConfig, Summary, count_facts, facts, scored_chunk
from .workers import LineError, Outcome, map_jsonl, worker_count


class PairConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    chosen_from: Literal["candidates", "reference", "auto"] = Field(
        "auto", description="where the chosen side comes from")
    max_chosen_cer: float = Field(0.1, ge=0, description="a candidate is good enough to be chosen up to this CER")
    min_margin: float = Field(0.05, ge=0, description="rejected CER must exceed chosen CER by this much")
    max_pairs_per_doc: int = Field(4, ge=1)
    dedup_threshold: float = Field(95.0, ge=0, le=100, description="rapidfuzz ratio at which candidates collapse")
    reject_worse: bool = Field(True, description="also reject clean candidates of clearly worse fidelity")
    reject_omission: bool = Field(True, description="reject candidates that stopped early (omission) against a "
                                                    "complete chosen side or the reference")
    score_by: Literal["auto", "fidelity", "judge"] = Field(
        "auto", description="rank candidates by CER (needs a reference) or judge score; auto: CER when there "
                            "is a reference, else the judge when candidates were judged")
    min_judge_margin: float = Field(0.2, ge=0, le=1, description="judge-score gap (0..1) for a worse-judged reject")


class PairRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    policy: PairConfig = Field(default_factory=PairConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)


@dataclass
class PairOutcome:
    pairs: list[Pair]
    no_pair_reason: str | None  # set when a document yields no pair


def _usable(cand: Candidate) -> bool:
    """A candidate the model really wrote: not a failed request (``finish_reason`` "error", what a dead
    server leaves), not blank. Only these become either side of a pair."""
    # ``error`` is an extra field when present: read the extras (a missing attribute costs an exception);
    # "not blank" without copying the text: str.strip and str.isspace share one definition of whitespace
    return (cand.finish_reason != "error" and not (cand.model_extra or {}).get("error") and cand.text != ""
            and not cand.text.isspace())


def _verdict(cand: Candidate) -> str:
    return cand.degeneration.verdict if cand.degeneration else "clean"


def _cer(cand: Candidate) -> float | None:
    return cand.fidelity.get("cer") if cand.fidelity else None


def _omitted(cand: Candidate) -> bool:
    return cand.omission is not None and cand.omission.verdict == "omission"


def _judge_score(cand: Candidate) -> float | None:
    return cand.judge.get("score") if cand.judge else None


def _mode(record: CandidateRecord, cfg: PairConfig) -> str:
    """How this record's candidates are ranked: fidelity, judge, or (neither) a stopped clean candidate."""
    if cfg.score_by != "auto":
        return cfg.score_by
    if record.reference is not None:
        return "fidelity"
    return "judge" if any(_judge_score(c) is not None for c in record.candidates) else "first_stopped"


def _pick_chosen(record: CandidateRecord, usable: list[Candidate], cfg: PairConfig,
                 mode: str) -> tuple[Candidate | None, str | None]:
    """Best clean candidate that passes every check and None, or None and why none qualifies."""
    clean = [c for c in usable if _verdict(c) == "clean" and not _omitted(c)]
    if clean and all(c.failed_checks for c in clean):
        return None, "no_candidate_passing_checks"
    clean = [c for c in clean if not c.failed_checks]
    if mode == "fidelity":
        if record.reference is None:
            return None, "no_reference"
        scored = [c for c in clean if _cer(c) is not None]
        good = [c for c in scored if _cer(c) <= cfg.max_chosen_cer]  # type: ignore[operator]
        if good:
            return min(good, key=lambda c: (_cer(c), c.index)), None
        return None, "no_clean_candidate_good_enough" if clean else "no_clean_candidate"
    if not clean:
        return None, "no_clean_candidate"
    if mode == "judge":
        judged = [c for c in clean if _judge_score(c) is not None]  # judge errors are never chosen
        if not judged:
            return None, "no_judged_clean_candidate"
        return max(judged, key=lambda c: (_judge_score(c), -c.index)), None
    # Neither a reference nor a judge: a clean candidate that ended on its own beats one cut off.
    return min(clean, key=lambda c: (c.finish_reason != "stop", c.index)), None


def _rejected_order(usable: list[Candidate], chosen: Candidate | None, chosen_cer: float | None, cfg: PairConfig,
                    mode: str) -> list[tuple[Candidate, str]]:
    degenerate = sorted((c for c in usable if _verdict(c) == "degenerate"),
                        key=lambda c: (-(c.degeneration.severity if c.degeneration else 0.0), c.index))
    # A failed check outranks an omission and any fidelity or judge comparison.
    failing = sorted((c for c in usable if _verdict(c) != "degenerate" and c.failed_checks),
                     key=lambda c: (-len(c.failed_checks), c.index))
    rest = [c for c in usable if _verdict(c) != "degenerate" and not c.failed_checks]
    omitted = sorted((c for c in rest if cfg.reject_omission and _omitted(c)),
                     key=lambda c: (c.omission.coverage or 0.0, c.index))  # type: ignore[union-attr]
    ordered = _alternate([(c, "rejected_degenerate") for c in degenerate],
                         [(c, "rejected_failed_check") for c in failing],
                         [(c, "rejected_omission") for c in omitted])
    rest = [c for c in rest if not _omitted(c)]
    if cfg.reject_worse and mode == "fidelity" and chosen_cer is not None:
        worse = [c for c in rest if _cer(c) is not None
                 and _cer(c) >= chosen_cer + cfg.min_margin]  # type: ignore[operator]
        ordered += [(c, "rejected_worse_fidelity") for c in sorted(worse, key=lambda c: (-_cer(c), c.index))]
    top = _judge_score(chosen) if chosen is not None else None
    if cfg.reject_worse and mode == "judge" and top is not None:
        worse = [c for c in rest if _judge_score(c) is not None
                 and _judge_score(c) <= top - cfg.min_judge_margin]  # type: ignore[operator]
        ordered += [(c, "rejected_worse_judge") for c in sorted(worse, key=lambda c: (_judge_score(c), c.index))]
    return ordered


NEAR_DUP_WINDOW = 4096  # characters of each end compared when texts are longer than twice this


def _norm_key(text: str) -> str:
    """The text after NFC and collapsed whitespace (the fidelity normalisation): texts equal up to those
    get equal keys. Compared as it is: a digest cost more than it saved (the texts of one document)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def near_duplicate(a: str, b: str, threshold: float) -> bool:
    """rapidfuzz ratio ≥ ``threshold``, at a cost bounded in the texts' length.

    Equal texts match at once (``make_pairs`` also matches texts equal after normalising, by digest);
    texts whose lengths alone rule the ratio out (it is at most 200·min/(sum) %) are not compared;
    texts longer than 2 × ``NEAR_DUP_WINDOW`` are compared on their first and last ``NEAR_DUP_WINDOW``
    characters (where a loop shows its unit), so a few multi-megabyte loops cost what a few pages do."""
    if a == b:
        return True
    short, long_ = sorted((len(a), len(b)))
    if 200.0 * short / max(short + long_, 1) < threshold:
        return False
    window = NEAR_DUP_WINDOW
    if long_ > 2 * window:
        a = a[:window] + a[-window:] if len(a) > 2 * window else a
        b = b[:window] + b[-window:] if len(b) > 2 * window else b
    return fuzz.ratio(a, b, score_cutoff=threshold) > 0 if threshold > 0 else True


def _alternate(*lists: list) -> list:
    """a1, b1, c1, a2, b2, c2, …, then the rest of the longer lists in the same turn."""
    out = []
    for i in range(max(map(len, lists), default=0)):
        for items in lists:
            out += items[i:i + 1]
    return out


def _completion(text: str, conversational: bool, parts: bool = False) -> str | list[dict[str, Any]]:
    """The reply as TRL wants it; for image documents in content parts, as VLM chat templates expect."""
    if not conversational:
        return text
    return [{"role": "assistant", "content": [{"type": "text", "text": text}] if parts else text}]


@dataclass
class _Selection:
    """What the policy picked for one document: the chosen side and the rejected candidates, in order."""

    chosen: Candidate | None  # None: the reference is the chosen side
    chosen_text: str
    rejected: list[tuple[Candidate, str]]  # (candidate, reason)


def _select(record: CandidateRecord, cfg: PairConfig) -> _Selection | str:
    """The policy (see the module docstring) on one scored record, or why it yields no pair."""
    if not record.candidates:
        return "sample_error" if record.error else "no_candidates"
    chosen: Candidate | None = None
    why_no_chosen = None
    mode = _mode(record, cfg)
    usable = [c for c in record.candidates if _usable(c)]
    if cfg.chosen_from != "reference":
        chosen, why_no_chosen = _pick_chosen(record, usable, cfg, mode)
    use_reference = chosen is None and cfg.chosen_from != "candidates" and record.reference is not None
    if chosen is None and not use_reference:
        if cfg.chosen_from == "reference":
            why_no_chosen = "no_reference"
        return why_no_chosen or "no_chosen"
    if chosen is None:
        chosen_text, chosen_cer = record.reference or "", 0.0
    else:
        chosen_text, chosen_cer = chosen.text, _cer(chosen)
    if not chosen_text.strip():
        return "empty_reference"

    picked: list[tuple[Candidate, str, str]] = []
    chosen_key = _norm_key(chosen_text)
    for cand, reason in _rejected_order(usable, chosen, chosen_cer, cfg, mode):
        if len(picked) >= cfg.max_pairs_per_doc:
            break
        key = _norm_key(cand.text)  # each text normalised once, however many it is compared with
        if (chosen is not None and cand.index == chosen.index) or key == chosen_key:
            continue  # nothing to prefer: the same text on both sides
        if any(key == other_key or near_duplicate(cand.text, other.text, cfg.dedup_threshold)
               for other, _, other_key in picked):
            continue
        picked.append((cand, reason, key))
    if not picked:
        return "no_rejected"
    return _Selection(chosen, chosen_text, [(cand, reason) for cand, reason, _ in picked])


def _pair_fields(record: CandidateRecord, picked: _Selection, prompt: Any, chosen_scores: Any, rejected: Candidate,
                 reason: str, rejected_scores: Any) -> dict[str, Any]:
    """One pair's fields, in :class:`Pair`'s field order (the order it writes them)."""
    conversational, parts = record.conversational, record.has_images
    chosen = picked.chosen
    return {
        "prompt": prompt,
        "chosen": _completion(picked.chosen_text, conversational, parts),
        "rejected": _completion(rejected.text, conversational, parts),
        "images": dump_refs(record.images) if record.images else None,
        "id": record.id,
        "reason": reason,
        "chosen_source": "reference" if chosen is None else "candidate",
        "chosen_index": None if chosen is None else chosen.index,
        "rejected_index": rejected.index,
        "chosen_scores": chosen_scores,
        "rejected_scores": rejected_scores,
        "rendered_prompt": record.rendered_prompt,
        "chosen_token_ids": None if chosen is None else chosen.token_ids,
        "rejected_token_ids": rejected.token_ids,
    }


def make_pairs(record: CandidateRecord, cfg: PairConfig) -> PairOutcome:
    """Pairs for one scored candidate record (see the module docstring for the policy)."""
    picked = _select(record, cfg)
    return PairOutcome([], picked) if isinstance(picked, str) else PairOutcome(_pairs(record, picked), None)


def _pairs(record: CandidateRecord, picked: _Selection) -> list[Pair]:
    chosen_scores = SideScores.of_reference() if picked.chosen is None else SideScores.of(picked.chosen)
    return [Pair(**_pair_fields(record, picked, record.prompt_value(), chosen_scores, cand, reason,
                                SideScores.of(cand)))
            for cand, reason in picked.rejected]


def pair_rows(record: CandidateRecord, cfg: PairConfig) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`make_pairs` as the rows `pair` writes: each ``Pair.model_dump(exclude_none=True)``, built
    without validating again what the record's validation already checked (a few times faster: `pair`
    writes millions). Image documents go through :class:`Pair` (their references are re-read)."""
    picked = _select(record, cfg)
    if isinstance(picked, str):
        return [], picked
    if record.images:
        return [pair.model_dump(exclude_none=True) for pair in _pairs(record, picked)], None
    chosen_scores = (SideScores.of_reference().model_dump() if picked.chosen is None
                     else SideScores.fields_of(picked.chosen))
    prompt = record.prompt_value()
    rows = [_pair_fields(record, picked, prompt, chosen_scores, cand, reason, SideScores.fields_of(cand))
            for cand, reason in picked.rejected]
    return [{key: value for key, value in row.items() if value is not None} for row in rows], None


class _SamePromptForm:
    """TRL reads a pairs file in one form: reject a record whose prompt form differs from the first."""

    def __init__(self) -> None:
        self.conversational: bool | None = None

    def __call__(self, record: CandidateRecord | Outcome) -> None:
        if self.conversational is None:
            self.conversational = record.conversational
        elif record.conversational != self.conversational:
            have, got = ("messages", "prompt") if self.conversational else ("prompt", "messages")
            raise ValueError(f"a '{got}' record in a file of '{have}' records; pairs need one form per file")


PairFacts = tuple[bytes, list[CandidateFacts], list[tuple[str, str, int, int]], str | None]


def _pair_facts(record: CandidateRecord, cfg: PairConfig, src_dir: Path, dst_dir: Path) -> PairFacts:
    """The pairs' lines, the candidates' facts, each pair's (reason, chosen source, chosen and rejected
    characters), why no pair. Image paths are rewritten to resolve from the output's folder."""
    rows, no_pair = pair_rows(record, cfg)
    lines = b"".join(dumps(rebase_record(row, src_dir, dst_dir)) for row in rows)
    kinds = [(row["reason"], row["chosen_source"], *PairLengths.sizes_of(row["chosen"], row["rejected"]))
             for row in rows]
    return lines, facts(record), kinds, no_pair


def _pair_chunk(records: list[CandidateRecord], cfg: PairRunConfig, src_dir: Path,
                dst_dir: Path) -> list[PairFacts | LineError]:
    """A chunk of records scored, then paired (see :func:`scoring.score_records` for why by chunk)."""
    return [error or _pair_facts(record, cfg.policy, src_dir, dst_dir)
            for record, error in zip(records, scored_chunk(records, cfg.score), strict=True)]


def run_pair(src: Path, dst: Path, cfg: PairRunConfig, *, skip_invalid: bool = False,
             progress: Progress | None = None, workers: int = 1) -> Summary:
    """Pairs of every record of ``src`` into ``dst`` on ``workers`` processes (0: all cores), in input order."""
    summary = Summary()
    with atomic_output(dst) as out:
        work = partial(_pair_chunk, cfg=cfg, src_dir=src.parent, dst_dir=dst.parent)
        for lines, candidates, kinds, no_pair in map_jsonl(
                src, CandidateRecord, work, workers=worker_count(workers, src), skip_invalid=skip_invalid,
                on_skip=summary.skipped, on_line=progress, check=_SamePromptForm()):
            count_facts(summary, candidates)
            if no_pair:
                summary.no_pair[no_pair] += 1
            for reason, source, chosen_chars, rejected_chars in kinds:
                summary.pairs += 1
                summary.pairs_by_reason[reason] += 1
                summary.chosen_source[source] += 1
                summary.lengths.add_sizes(reason, chosen_chars, rejected_chars)
            out.write(lines)
    return summary
