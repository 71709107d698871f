"""Omission: a candidate that ends on its own before it has reproduced the reference. Pure.

The failure DPO against loops tends to create: when every rejected side is a long loop and every chosen
side is short, the cheapest way to win is to stop early (issue 12). A loop is *degeneration*, not
omission; an early stop is *omission*; the two are kept apart so a result that trades one for the other
reads as what it is. The rule, per candidate:

* ``complete`` — it reproduces at least ``min_coverage`` of the reference's words in order
  (``fidelity.coverage``; whatever else it writes, a loop after a full copy included, is judged by the
  loop detector, not here).
* ``omission`` — below ``min_coverage`` and it *ended on its own* (end of turn), and is not a loop:
  the model chose to stop with words missing.
* ``cut`` — below ``min_coverage`` but it never ended on its own: a loop (counted under degeneration)
  or ``max_tokens``/a loop stop reached first. The words are missing, the ``why`` says so, and its
  coverage counts in the coverage statistics; it is not counted as an omission, because raising
  ``max_tokens`` or removing the loop is the fix, not a longer answer.

The ``why`` also says how much the candidate wrote (``length_ratio``: its words / the reference's):
an early stop writes little, a rewrite writes as much but other words. Both lose the reference's words,
and coverage alone decides the verdict, but the two read differently.

``min_coverage`` defaults to 0.8: a transcription that leaves out a fifth of the words has lost at least
a paragraph of a page, far beyond the few per cent of words that slips in a faithful copy cost.

Without a reference the judge's ``completeness`` criterion plays coverage's part: the criterion's value
scaled to 0..1, with its own threshold (judges rarely give full marks, so 0.5: "half or less there").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CUT_REASONS = {"length", "repetition"}  # finish reasons of a candidate that never ended its turn


class OmissionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_coverage: float = Field(0.8, ge=0, le=1, description="share of the reference's words a candidate that "
                                                              "stopped on its own must reproduce")
    min_completeness: float = Field(0.5, ge=0, le=1, description="without a reference: the judge's completeness "
                                                                  "(scaled 0..1) below which it is an omission")
    criterion: str = Field("completeness", description="the judge criterion that plays coverage's part")


class Omission(BaseModel):
    """A candidate's ``omission`` field."""

    model_config = ConfigDict(extra="allow")
    verdict: Literal["omission", "complete", "cut"]
    coverage: float | None = None  # share of the reference's words; None when judged without a reference
    length_ratio: float | None = None  # the candidate's words / the reference's words
    why: str = ""
    source: Literal["reference", "judge"] = "reference"


def _ending(finish_reason: str | None, degenerate: bool) -> str | None:
    """How a candidate that fell short ended, when not on its own; None when it stopped on its own."""
    if degenerate:
        return "in a loop (counted as degeneration, not omission)"
    if finish_reason == "length":
        return "cut off at max_tokens"
    if finish_reason == "repetition":
        return "stopped by the loop stop"
    return None


def judge_omission(coverage: float, finish_reason: str | None, degenerate: bool,
                   cfg: OmissionConfig | None = None, length_ratio: float | None = None) -> Omission:
    """The verdict for a candidate that reproduced ``coverage`` of its reference's words (and wrote
    ``length_ratio`` times as many words as the reference, when given)."""
    cfg = cfg or OmissionConfig()
    share = f"{coverage:.0%} of the reference's words"
    ratio = None if length_ratio is None else round(length_ratio, 4)
    if coverage >= cfg.min_coverage:
        return Omission(verdict="complete", coverage=coverage, length_ratio=ratio, why=f"reproduced {share}")
    cut = _ending(finish_reason, degenerate)
    if cut is not None:
        return Omission(verdict="cut", coverage=coverage, length_ratio=ratio, why=f"{cut} after {share}")
    why = f"stopped on its own after {share}"
    if length_ratio is not None and length_ratio >= cfg.min_coverage:
        why = (f"ended on its own with {share} reproduced, having written {length_ratio:.0%} as many words as the "
               "reference: more a rewrite than an early stop")
    elif length_ratio is not None:
        why += f" (it wrote {length_ratio:.0%} as many words as the reference)"
    return Omission(verdict="omission", coverage=coverage, length_ratio=ratio, why=why)


def judged_omission(judge: dict[str, Any] | None, scale: int, finish_reason: str | None, degenerate: bool,
                    cfg: OmissionConfig | None = None) -> Omission | None:
    """Without a reference: the verdict from the judge's completeness criterion; None when not judged on it."""
    cfg = cfg or OmissionConfig()
    value = ((judge or {}).get("criteria") or {}).get(cfg.criterion)
    if not isinstance(value, int | float) or scale < 2:
        return None
    completeness = (value - 1) / (scale - 1)
    said = f"the judge's {cfg.criterion} {value:g}/{scale}"
    if completeness >= cfg.min_completeness:
        return Omission(verdict="complete", why=said, source="judge", completeness=round(completeness, 4))
    cut = _ending(finish_reason, degenerate)
    verdict = "cut" if cut is not None else "omission"
    why = f"{cut}; {said}" if cut is not None else f"stopped on its own; {said}"
    return Omission(verdict=verdict, why=why, source="judge", completeness=round(completeness, 4))
