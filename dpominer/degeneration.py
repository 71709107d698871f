"""Repetition-loop ("text degeneration") detection. Pure functions, no I/O.

A candidate is judged from a few cheap signals, each computed in near-linear time:

* ``tail``: the repeated unit the text ends with (character level, and token level when ids are
  given): unit length, copies, span, start offset. A last copy cut off mid-unit still counts, since
  the check is for *periodicity* of the suffix. Short units need more copies (``4·(1+3/L)``, after
  Chandra's OCR loop check). A second pass with digit runs and whitespace collapsed catches counter
  loops ("step 1, step 2, …"), a weaker signal.
* ``rep_tail``: seq-rep-n (Welleck et al. 2019) over the last words: the share of repeated n-grams.
  Catches near-repeats (a word swapped per copy) that exact checks miss.
* ``tail_cr``: how cheaply the last part of the text compresses *given the rest* (zlib, one pass).
  Unlike the whole-text compression ratio it does not grow with length, and a loop confined to the
  last 15 % still moves it.
* ``cr``: Whisper's compression ratio, exactly as Whisper computes it, reported and compared with the
  reference's own ratio when there is one — never against a fixed 2.4 (clean 4 KB prose reaches 2.5).
* ``finish_reason``: ``length`` (cut off at max_tokens) lowers the bar for other signals; it is never
  enough alone (many clean outputs run to the cap too).
* ``items``, ``inline``, ``sentences``, ``word_run`` (:mod:`dpominer.repeats`): a list item stuck while
  its number or weekday moves, list lines (or a one-line list's items) re-said, sentences re-said with a
  word swapped, one word said over and over — loops that need not sit at the very end and often stop
  by themselves.
* ``logprobs``: the mean log-prob of the last quarter of the tokens, when the sampler stored them.

Strong signals decide by rule (module order in :func:`_decide`); what is left with some repetition
goes to a small logistic model (:mod:`dpominer.loop_model`, coefficients as plain data) that decides
``degenerate``/``clean`` and leaves only its uncertain band ``suspect``. When a reference is given,
repetition that the reference has as well (tables, lists, counting) is judged ``clean`` with
``kind="legit_repetition"``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from .loop_model import features, loop_probability
from .periodicity import (
    TailLoop,
    compression_ratio,
    copies_needed,
    counter_loop,
    find_tail_loop,
    is_loop,
    normalise,
    rep_n,
    tail_compression_ratio,
    tail_loop_with_trim,
    tail_words,
    token_string,
)
from .records import CUT_OFF, Degeneration
from .repeats import (
    InlineList,
    ListStats,
    SentenceStats,
    inline_list,
    list_stats,
    logprob_profile,
    sentence_stats,
    word_run,
)

__all__ = ["DEFAULT_DETECTOR", "DetectorConfig", "compression_ratio", "copies_needed", "detect", "find_tail_loop",
           "rep_n", "token_string"]


class DetectorConfig(BaseModel):
    """Thresholds of the detector (calibrated with ``bench/calibrate.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_span_chars: int = Field(40, ge=1, description="a tail loop must cover at least this many chars")
    max_unit_chars: int = Field(1024, ge=1, description="longest repeated unit looked for")
    window_chars: int = Field(16384, ge=64, description="tail window searched for loop units")
    copies_long: float = Field(4.0, gt=1, description="copies needed for long units; L chars need ·(1+3/L)")
    length_prior: float = Field(0.75, gt=0, le=1, description="copies needed ×this when cut off at max_tokens")
    ngram: int = Field(4, ge=1)
    rep_words: int = Field(160, ge=16, description="tail words over which seq-rep-n is computed")
    rep_degenerate: float = Field(0.45, ge=0, le=1)
    rep_suspect: float = Field(0.35, ge=0, le=1)
    tail_fraction: float = Field(0.25, gt=0, lt=1, description="share of the text scored by tail_cr")
    tail_cr_degenerate: float = Field(6.0, gt=0)
    tail_cr_suspect: float = Field(4.0, gt=0)
    rep_stopped: float = Field(0.6, ge=0, le=1, description="rep_tail for near-repeats that stopped on their own")
    tail_cr_stopped: float = Field(15.0, gt=0, description="tail_cr for near-repeats that stopped on their own")
    min_tail_chars: int = Field(200, ge=1, description="tail_cr/rep_tail need this much text to speak")
    ref_cr_margin: float = Field(1.5, gt=1, description="cr above ref_cr×this is suspicious")
    ref_cr_degenerate: float = Field(2.0, gt=1, description="cut off and cr above ref_cr×this is a loop")
    item_copies: int = Field(4, ge=2, description="list lines with one stuck item (marker climbing) that make a loop")
    line_copies: int = Field(3, ge=2, description="the same line (with letters, marker and all) said this often "
                                                  "in a row makes a loop")
    word_copies: int = Field(5, ge=2, description="a word with letters said this often in a row makes a loop")
    sentence_repeats: int = Field(4, ge=2, description="sentences re-said (or one word swapped) that make a loop")
    dup_items: int = Field(8, ge=2, description="list lines (with letters) needed before their repeats count")
    # above one half: a list asked for "twice over" (two weeks of chores) re-says exactly half
    dup_share: float = Field(0.6, gt=0, le=1, description="share of list lines re-said that makes a loop")
    inline_dup_share: float = Field(0.7, gt=0, le=1, description="share of a one-line list's items re-said that "
                                                                "makes a loop")
    sentence_gate: float = Field(0.08, ge=0, le=1, description="rep_tail needed before sentences are compared")
    sentence_share: float = Field(0.5, gt=0, le=1, description="…and their share of the window's sentences")
    suspect_band: tuple[float, float] = Field((0.3, 0.7), description="model probability left undecided")


@lru_cache(maxsize=256)
def _reference_features(reference: str, cfg: DetectorConfig) -> tuple[float, str, float]:
    """Per-document work done once, not once per candidate: the reference's compression ratio,
    normal form and seq-rep-n."""
    return compression_ratio(reference), normalise(reference), rep_n(tail_words(reference, cfg), cfg.ngram)


@dataclass
class Signals:
    tail: TailLoop | None
    tail_norm: TailLoop | None
    tail_tokens: TailLoop | None
    rep_tail: float
    tail_cr: float
    cr: float
    cr_ref: float | None
    n_words: int
    rep_ref: float | None = None  # the reference's seq-rep-n, when there is one
    items: ListStats | None = None
    inline: InlineList | None = None
    sentences: SentenceStats | None = None
    word_run: tuple[int, str] = (0, "")
    logprobs: tuple[float, float] | None = None  # (mean of the last quarter, of the first)

    def as_dict(self) -> dict:
        out: dict = {"rep_tail": round(self.rep_tail, 4), "tail_cr": round(self.tail_cr, 3), "cr": round(self.cr, 3)}
        if self.cr_ref is not None:
            out["cr_ref"] = round(self.cr_ref, 3)
        for name in ("tail", "tail_norm", "tail_tokens"):
            loop = getattr(self, name)
            if loop is not None:
                out[name] = {"unit_len": loop.unit_len, "copies": round(loop.copies, 2), "span": loop.span,
                             "start": loop.start, "trimmed": loop.trimmed}
        if self.items is not None and self.items.run is not None:
            run = self.items.run
            out["items"] = {"lines": self.items.items, "stuck": run.copies, "counter": run.counter,
                            "dup_share": round(self.items.dup_share, 3)}
        if self.inline is not None and self.inline.dup_share:
            out["inline"] = {"items": self.inline.items, "dup_share": round(self.inline.dup_share, 3)}
        if self.sentences is not None and (self.sentences.repeats or self.sentences.near):
            out["sentences"] = {"count": self.sentences.sentences, "repeats": self.sentences.repeats,
                                "exact": self.sentences.exact, "near": self.sentences.near}
        if self.word_run[0] >= 3:
            out["word_run"] = self.word_run[0]
        if self.logprobs is not None:
            out["logprob_tail"], out["logprob_head"] = round(self.logprobs[0], 3), round(self.logprobs[1], 3)
        return out


def compute_signals(text: str, cfg: DetectorConfig, token_ids: list[int] | None, cut_off: bool,
                    reference: str | None, token_logprobs: list[float] | None = None) -> Signals:
    tail = tail_loop_with_trim(text, cfg, cut_off)
    decided = is_loop(tail, cfg, cut_off)  # an exact tail loop: the finer signals below are not needed
    tail_norm = None if decided else counter_loop(text, cfg, cut_off)
    tail_tokens = None
    if token_ids:
        tail_tokens = find_tail_loop(token_string(token_ids), cfg, cut_off=cut_off)
    words = tail_words(text, cfg)
    long_enough = len(text) >= cfg.min_tail_chars
    rep_tail = rep_n(words, cfg.ngram) if len(words) > cfg.ngram else 0.0
    ref = _reference_features(reference, cfg) if reference else None
    return Signals(
        tail=tail,
        tail_norm=tail_norm,
        tail_tokens=tail_tokens,
        rep_tail=rep_tail if long_enough else 0.0,
        tail_cr=tail_compression_ratio(text, cfg.tail_fraction) if long_enough else 0.0,
        cr=compression_ratio(text),
        cr_ref=ref[0] if ref else None,
        rep_ref=ref[2] if ref else None,
        n_words=len(words),
        items=None if decided else list_stats(text, min_items=min(4, cfg.line_copies)),
        inline=None if decided else inline_list(text, min_items=cfg.dup_items),
        # Sentences only where 4-grams repeat: a sentence re-said with a word swapped keeps about a
        # third of its 4-grams, so half the sentences re-said puts rep-4 well above this bar, and
        # clean prose (rep-4 ≈ 0) skips the sentence split.
        sentences=sentence_stats(text) if rep_tail >= cfg.sentence_gate and not decided else None,
        # a run of more words than the n-gram repeats n-grams: where none repeat (prose), there is no run
        word_run=word_run(words) if (rep_tail > 0 or cfg.word_copies <= cfg.ngram) and not decided else (0, ""),
        logprobs=logprob_profile(token_logprobs) if token_logprobs else None,
    )


@dataclass(frozen=True)
class Finding:
    """A verdict and where it comes from: the repeated unit, where it starts, how many copies."""

    verdict: str
    kind: str | None
    why: str
    start: int | None = None
    unit: str | None = None
    copies: float | None = None
    span: int = 0


def _loop_finding(verdict: str, kind: str, name: str, loop: TailLoop, text: str) -> Finding:
    trimmed = f", ragged last {loop.trimmed} chars ignored" if loop.trimmed else ""
    why = (f"{name}: {loop.unit_len}-char unit × {loop.copies:.1f} copies over the last {loop.span} chars "
           f"(from char {loop.start} of {len(text)}){trimmed}")
    unit = text[loop.start : loop.start + loop.unit_len]
    return Finding(verdict, kind, why, loop.start, unit, loop.copies, loop.span)


def _structure_finding(text: str, sig: Signals, cfg: DetectorConfig, cut_off: bool) -> Finding | None:
    """Loops that need not sit at the very end: a stuck list item, sentences re-said, a word said over."""
    run = sig.items.run if sig.items is not None else None
    # The same line said again and again; with its number or weekday moving it takes more copies
    # ("Monday: rest", "Tuesday: rest", "Wednesday: rest" is a plan).
    if run is not None and run.copies >= (cfg.item_copies if run.counter else cfg.line_copies):
        moving = "while its number/day changes" if run.counter else "line after line"
        why = (f"list item stuck: {run.item[:60]!r} × {run.copies} lines {moving} "
               f"(chars {run.start}–{run.end} of {len(text)})")
        first_line = text[run.start : text.find("\n", run.start) % (len(text) + 1)]
        return Finding("degenerate", "stuck_item", why, run.start, first_line, float(run.copies), run.end - run.start)
    items = sig.items
    if items is not None and items.worded >= cfg.dup_items and items.dup_share >= cfg.dup_share:
        # more than half the lines re-say an earlier line, not necessarily back to back (a block
        # of items under each heading, a table whose rows come round again)
        why = (f"list lines re-said: {items.dup_share:.0%} of {items.worded} lines repeat an earlier one, "
               f"first {items.dup_item[:60]!r} (from char {items.first_dup} of {len(text)})")
        return Finding("degenerate", "repeated_items", why, items.first_dup, items.dup_item,
                       items.dup_share * items.worded, len(text) - items.first_dup)
    sent = sig.sentences
    # Half the sentences re-said, and some of them word for word (up to a counter): a checklist of
    # "Check the X." lines swaps a word each time but never says the same thing twice.
    if sent is not None and sent.repeats >= cfg.sentence_repeats and sent.exact >= 2 and \
            sent.repeats >= cfg.sentence_share * sent.sentences:
        why = (f"sentences re-said: {sent.repeats} of the last {sent.sentences} repeat an earlier one "
               f"({sent.exact} word for word or with a number changed, the rest with one word swapped; "
               f"from char {sent.start} of {len(text)})")
        return Finding("degenerate", "sentence_repeat", why, sent.start, None, float(sent.repeats + 1),
                       len(text) - sent.start)
    count, word = sig.word_run
    # A word said over and over ("sua sua sua sua sua", "th, th, th, th, th") is never prose; runs of
    # punctuation (empty table cells, "- - -" rules) need as many copies as any short unit.
    needed = cfg.word_copies if any(map(str.isalpha, word)) else max(4.0, copies_needed(len(word) + 1, cfg, cut_off))
    if word and count >= needed:
        found = re.search(f"(?:{re.escape(word)}\\s+){{{count - 1}}}", text.lower())
        start = found.start() if found else None  # None when digits were folded into the word
        where = f" (from char {start} of {len(text)})" if start is not None else ""
        why = f"word run: {word!r} said {count} times in a row among the last {sig.n_words} words{where}"
        return Finding("degenerate", "word_run", why, start, word, float(count), count * (len(word) + 1))
    inline = sig.inline
    if inline is not None and inline.dup_share >= cfg.inline_dup_share:
        why = (f"inline list items re-said: {inline.dup_share:.0%} of {inline.items} items repeat an earlier one, "
               f"first {inline.item[:60]!r} (from char {inline.start} of {len(text)})")
        return Finding("degenerate", "repeated_inline_items", why, inline.start, inline.item,
                       inline.dup_share * inline.items, len(text) - inline.start)
    return None


def _weak_finding(text: str, sig: Signals, cfg: DetectorConfig, cut_off: bool) -> Finding:
    """What is left after the strong rules: weak signals, weighed by the calibrated model."""
    weak = []
    for name, candidate in (("tail", sig.tail), ("tail_norm", sig.tail_norm)):
        if candidate is not None and candidate.span >= cfg.min_span_chars and \
                candidate.copies >= 0.5 * copies_needed(candidate.unit_len, cfg, cut_off):
            weak.append(f"{name} {candidate.unit_len}-char unit × {candidate.copies:.1f}")
    if sig.rep_tail >= cfg.rep_suspect:
        weak.append(f"rep-{cfg.ngram} {sig.rep_tail:.2f}")
    if sig.tail_cr >= cfg.tail_cr_suspect:
        weak.append(f"tail compresses {sig.tail_cr:.1f}×")
    if sig.cr_ref is not None and sig.cr > max(sig.cr_ref * cfg.ref_cr_margin, 1.0):
        weak.append(f"compression ratio {sig.cr:.2f} vs reference {sig.cr_ref:.2f}")
    if sig.items is not None and sig.items.run is not None and sig.items.run.copies >= 3:
        weak.append(f"list item {sig.items.run.item[:40]!r} × {sig.items.run.copies}")
    if sig.sentences is not None and sig.sentences.repeats >= 2:
        weak.append(f"{sig.sentences.repeats} of {sig.sentences.sentences} sentences re-said")
    elif sig.sentences is not None and sig.sentences.near >= 3:
        weak.append(f"{sig.sentences.near} of {sig.sentences.sentences} sentences close to an earlier one")
    if sig.items is not None and sig.items.worded >= cfg.dup_items and sig.items.dup_share >= 0.5 * cfg.dup_share:
        weak.append(f"{sig.items.dup_share:.0%} of {sig.items.worded} list lines re-said")
    elif sig.items is not None and sig.items.worded >= cfg.dup_items and sig.items.dup_folded >= 0.5 * cfg.dup_share:
        weak.append(f"{sig.items.dup_folded:.0%} of {sig.items.worded} list lines re-said up to their numbers")
    if not weak:
        return Finding("clean", None, "no repetition signal")
    prob = loop_probability(features(sig, cfg, cut_off))
    low, high = cfg.suspect_band
    verdict = "degenerate" if prob >= high else "clean" if prob < low else "suspect"
    loop = sig.tail_norm if sig.tail_norm is not None and sig.tail_norm.span >= cfg.min_span_chars else sig.tail
    why = f"weak repetition, loop probability {prob:.2f}: " + "; ".join(weak)
    if loop is None or verdict == "clean":
        return Finding(verdict, "weak_repetition", why)
    return Finding(verdict, "weak_repetition", why, loop.start, text[loop.start : loop.start + loop.unit_len],
                   loop.copies, loop.span)


def _decide(text: str, sig: Signals, cfg: DetectorConfig, cut_off: bool, n_tokens: int) -> Finding:
    token_loop = is_loop(sig.tail_tokens, cfg, cut_off, min_span=max(4, cfg.min_span_chars // 4))
    near = sig.rep_tail >= cfg.rep_degenerate and sig.tail_cr >= cfg.tail_cr_degenerate
    near_repeat_stopped = sig.rep_tail >= cfg.rep_stopped and sig.tail_cr >= cfg.tail_cr_stopped
    if is_loop(sig.tail, cfg, cut_off):
        assert sig.tail is not None
        return _loop_finding("degenerate", "tail_loop", "tail loop", sig.tail, text)
    if token_loop:
        assert sig.tail_tokens is not None
        loop = sig.tail_tokens
        return Finding("degenerate", "token_loop",
                       f"token loop: {loop.unit_len}-token unit × {loop.copies:.1f} copies over the last "
                       f"{loop.span} tokens (from token {loop.start} of {n_tokens})")
    if is_loop(sig.tail_norm, cfg, cut_off) and cut_off:
        assert sig.tail_norm is not None
        return _loop_finding("degenerate", "counter_loop", "loop up to numbers/spacing", sig.tail_norm, text)
    if (near and cut_off) or near_repeat_stopped:
        why = (f"near-repeats: rep-{cfg.ngram} {sig.rep_tail:.2f} over the last {sig.n_words} words, "
               f"tail compresses {sig.tail_cr:.1f}×")
        return Finding("degenerate", "near_repeat", why)
    structure = _structure_finding(text, sig, cfg, cut_off)
    if structure is not None:
        return structure
    if not cut_off and sig.items is not None and sig.items.moving_numbers >= 2:
        # Lines of one shape whose numbers move in two or more places each time are a table or a plan
        # ("Week 2: run 3 km", "7 x 2 = 14"), and the model ended them itself.
        why = f"lines of one shape whose numbers change in {sig.items.moving_numbers} places: a table or a plan"
        return Finding("clean", "legit_pattern", why)
    if cut_off and sig.cr_ref and sig.cr >= cfg.ref_cr_degenerate * sig.cr_ref:
        why = f"compresses {sig.cr / sig.cr_ref:.1f}× better than the reference ({sig.cr:.2f} vs {sig.cr_ref:.2f})"
        return Finding("degenerate", "compression", why)
    return _weak_finding(text, sig, cfg, cut_off)


def _legit(text: str, reference: str, found: Finding, sig: Signals, cfg: DetectorConfig) -> bool:
    """True when the reference repeats the same way, so the repetition is the content itself."""
    if len(text) > 1.5 * len(reference) + 100:
        return False  # far longer than the truth: whatever repeats, it repeats too often
    ref_norm = _reference_features(reference, cfg)[1]
    if found.kind == "repeated_items":
        ref_items = list_stats(reference)
        return ref_items is not None and ref_items.dup_share >= 0.8 * (sig.items.dup_share if sig.items else 1.0)
    if found.kind == "repeated_inline_items":
        ref_inline = inline_list(reference, min_items=cfg.dup_items)
        return ref_inline is not None and ref_inline.dup_share >= 0.8 * (sig.inline.dup_share if sig.inline else 1.0)
    if found.kind == "stuck_item" and found.unit:
        # the same line (numbers as 0) as often in the reference, back to back or not
        return ref_norm.count(normalise(found.unit).strip()) >= math.ceil(0.75 * (found.copies or 0))
    if found.unit and found.copies and found.kind != "word_run":
        # The reference must hold the same run — most of the copies, back to back — not merely the
        # unit somewhere (a 2-char unit occurs in any text).
        unit = normalise(found.unit)
        run = max(2, math.ceil(0.75 * min(found.copies, copies_needed(len(found.unit), cfg))))
        return bool(unit.strip()) and unit * run in ref_norm
    return sig.rep_tail > 0 and _reference_features(reference, cfg)[2] >= 0.8 * sig.rep_tail


def detect(
    text: str,
    *,
    token_ids: list[int] | None = None,
    finish_reason: str | None = None,
    reference: str | None = None,
    token_logprobs: list[float] | None = None,
    cfg: DetectorConfig | None = None,
) -> Degeneration:
    """Judge one candidate: ``degenerate`` | ``suspect`` | ``clean``, with signals and why."""
    cfg = cfg or DEFAULT_DETECTOR
    cut_off = finish_reason in CUT_OFF
    sig = compute_signals(text, cfg, token_ids, cut_off, reference, token_logprobs)
    found = _decide(text, sig, cfg, cut_off, len(token_ids or []))
    verdict, kind, why = found.verdict, found.kind, found.why
    if verdict != "clean" and reference is not None and _legit(text, reference, found, sig, cfg):
        verdict, kind, why = "clean", "legit_repetition", f"repetition the reference has too ({why})"
    if cut_off:
        why += "; cut off at max_tokens" if finish_reason == "length" else "; stopped by the loop early-stop"
    severity = 0.0
    if verdict != "clean":
        covered = found.span / len(text) if found.span and text else 0.0
        severity = round(min(1.0, max(covered, sig.rep_tail)), 4)
    return Degeneration(
        verdict=verdict, kind=kind, why=why, severity=severity, signals=sig.as_dict(),
        unit=(found.unit or "")[:200] or None, start_char=found.start,
        copies=round(found.copies, 2) if found.copies is not None else None,
    )


DEFAULT_DETECTOR = DetectorConfig()
