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

When a reference is given, repetition that the reference has as well (tables, lists, counting) is
judged ``clean`` with ``kind="legit_repetition"``.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from .records import CUT_OFF, Degeneration


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


@dataclass(frozen=True)
class TailLoop:
    unit_len: int  # characters (or tokens, for the token-level pass)
    span: int  # length of the periodic suffix, last partial copy included
    start: int  # offset in the text where the periodic suffix starts
    copies: float  # span / unit_len
    trimmed: int = 0  # characters dropped from the end before the loop was found


def copies_needed(unit_len: int, cfg: DetectorConfig, cut_off: bool = False) -> float:
    need = cfg.copies_long * (1.0 + 3.0 / unit_len)
    return max(2.0, need * cfg.length_prior) if cut_off else need


def _periodic_extent(s: str, end: int, p: int, known: int) -> int:
    """Largest e such that s[end-p-e : end-p] == s[end-e : end], given that ``known`` holds."""
    limit = end - p
    good, step = min(known, limit), max(known, 1)
    bad = limit + 1
    while good < limit:  # exponential search, then bisection: O(log span) slice compares
        trial = min(limit, good + step)
        if s[end - p - trial : end - p] == s[end - trial : end]:
            good, step = trial, step * 2
        else:
            bad = trial
            break
    while bad - good > 1:
        mid = (good + bad) // 2
        if s[end - p - mid : end - p] == s[end - mid : end]:
            good = mid
        else:
            bad = mid
    return good


def find_tail_loop(s: str, cfg: DetectorConfig, end: int | None = None, cut_off: bool = False) -> TailLoop | None:
    """The strongest repeated unit that ``s[:end]`` ends with, or None.

    Candidate unit lengths come from the occurrences of the last few characters in the tail window
    (``str.rfind``, C speed); each is verified by :func:`_periodic_extent`. A multiple of an already
    verified unit p is skipped when it fits inside p's span, since its span is then exactly p's.
    """
    end = len(s) if end is None else end
    if end < 2:
        return None
    probe_len = max(1, min(8, end // 2))
    probe = s[end - probe_len : end]
    lo = max(0, end - probe_len - cfg.max_unit_chars, end - cfg.window_chars)
    verified: list[tuple[int, int]] = []
    best: TailLoop | None = None
    best_key = (False, 0.0)
    j = s.rfind(probe, lo, end - 1)
    while j != -1:
        p = end - probe_len - j
        if not any(p % q == 0 and p <= span for q, span in verified):
            span = p + _periodic_extent(s, end, p, probe_len)
            verified.append((p, span))
            loop = TailLoop(unit_len=p, span=span, start=end - span, copies=span / p)
            # A qualifying loop with the longest span wins (a line of "=====" repeated 8 times is a
            # line loop, not a "=" loop); among the rest, the one closest to qualifying.
            qualifies = is_loop(loop, cfg, cut_off)
            key = (qualifies, float(span) if qualifies else loop.copies / copies_needed(p, cfg, cut_off))
            if key > best_key:
                best, best_key = loop, key
        j = s.rfind(probe, lo, j + probe_len - 1)
    return best


def is_loop(loop: TailLoop | None, cfg: DetectorConfig, cut_off: bool, min_span: int | None = None) -> bool:
    if loop is None:
        return False
    min_span = cfg.min_span_chars if min_span is None else min_span
    return loop.copies >= copies_needed(loop.unit_len, cfg, cut_off) and loop.span >= min_span


def _tail_loop_with_trim(text: str, cfg: DetectorConfig, cut_off: bool) -> TailLoop | None:
    """Tail loop at the very end; when cut off, also after dropping a ragged end (as Chandra does)."""
    loop = find_tail_loop(text, cfg, cut_off=cut_off)
    if is_loop(loop, cfg, cut_off) or not cut_off:
        return loop
    for trim in (8, 50):
        if len(text) - trim < cfg.min_span_chars:
            break
        trimmed = find_tail_loop(text, cfg, end=len(text) - trim, cut_off=cut_off)
        if is_loop(trimmed, cfg, cut_off):
            return TailLoop(trimmed.unit_len, trimmed.span, trimmed.start, trimmed.copies, trim)
    return loop


_DIGITS = re.compile(r"\d+")
_RUNS = re.compile(r"\d+|\s+")
_ASCII_DIGITS = b"0123456789"


def _has_digits(text: str) -> bool:
    if not text.isascii():
        return _DIGITS.search(text) is not None
    raw = text.encode("ascii")
    return len(raw.translate(None, _ASCII_DIGITS)) != len(raw)  # ~20× faster than a regex scan


def _normalise(text: str) -> str:
    """Digit runs → '0', whitespace runs → ' ': counters and spacing stop breaking periodicity."""
    if _has_digits(text):
        text = _DIGITS.sub("0", text)
    inner = " ".join(text.split())  # C speed; keep one space for leading/trailing runs too
    lead = " " if text[:1].isspace() and inner else ""
    trail = " " if text[-1:].isspace() else ""
    return lead + inner + trail


def _original_offset(window: str, norm_pos: int) -> int:
    """Map a position in ``_normalise(window)`` back to ``window`` (each run shrinks to one char)."""
    shrunk = 0  # characters removed by the runs before the current one
    for m in _RUNS.finditer(window):
        if m.start() - shrunk >= norm_pos:
            break
        if m.start() - shrunk + 1 > norm_pos:  # inside this run's single normalised char
            return m.start()
        shrunk += len(m.group()) - 1
    return norm_pos + shrunk


def _counter_loop(text: str, cfg: DetectorConfig, cut_off: bool) -> TailLoop | None:
    """Tail loop of the normalised text, mapped back to offsets in ``text``.

    Searched in the last 1 KB first (normalising costs more than the exact search); only a loop
    that fills that window is searched again over the whole tail window, to find where it starts.
    """
    for width in (1024, cfg.window_chars):
        offset = max(0, len(text) - width)
        window = text[offset:]
        norm = _normalise(window)
        found = find_tail_loop(norm, cfg, cut_off=cut_off) if norm != window else None
        if found is None or found.start > 0 or offset == 0 or width == cfg.window_chars:
            break
    if found is None:
        return None
    if not is_loop(found, cfg, cut_off):  # reported for `suspect`; offsets only matter for real loops
        return TailLoop(found.unit_len, found.span, offset + found.start, found.copies)
    start = offset + _original_offset(window, found.start)
    return TailLoop(found.unit_len, len(text) - start, start, found.copies)


def token_string(ids: list[int]) -> str:
    """Token ids as a string (one code point each), so the same C-speed search runs on tokens."""
    return "".join(chr(i + 0x800) if i >= 0xD800 else chr(i) for i in ids)




def rep_n(words: list[str], n: int) -> float:
    """seq-rep-n: 1 − |unique n-grams| / |n-grams| (Welleck et al. 2019)."""
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    return 1.0 - len(set(zip(*(words[i:] for i in range(n)), strict=False))) / total  # ragged on purpose


def tail_words(text: str, cfg: DetectorConfig) -> list[str]:
    """The last words, lower-cased, split on whitespace (punctuation stays on the word: loops repeat
    it too), with digit runs as '0' so counters read as repeats. ~12 chars a word is generous."""
    tail = text[-cfg.rep_words * 12 :].lower()
    if _has_digits(tail):
        tail = _DIGITS.sub("0", tail)
    return tail.split()[-cfg.rep_words :]


@lru_cache(maxsize=256)
def _reference_features(reference: str, cfg: DetectorConfig) -> tuple[float, str, float]:
    """Per-document work done once, not once per candidate: the reference's compression ratio,
    normal form and seq-rep-n."""
    return compression_ratio(reference), _normalise(reference), rep_n(tail_words(reference, cfg), cfg.ngram)


def compression_ratio(text: str) -> float:
    """Whisper's compression ratio: len(b) / len(zlib.compress(b)) on the stripped UTF-8 bytes."""
    data = text.strip().encode("utf-8")
    if not data:
        return 0.0
    return len(data) / len(zlib.compress(data))


def tail_compression_ratio(text: str, fraction: float, context: int = 2048) -> float:
    """Bytes of the last ``fraction`` of the text ÷ what they cost zlib after the ``context`` bytes
    before them (a loop's earlier copies sit right before its tail; more context only costs time)."""
    data = text.encode("utf-8")
    cut = int(len(data) * (1 - fraction))
    tail = data[cut:]
    if not tail:
        return 0.0
    # Raw deflate with a 4 KB window and small hash tables: same sizes here, half the set-up cost.
    comp = zlib.compressobj(6, zlib.DEFLATED, -12, 4)
    comp.compress(data[max(0, cut - context) : cut])
    comp.flush(zlib.Z_SYNC_FLUSH)  # byte-aligns the head; the history stays for the tail
    cost = len(comp.compress(tail)) + len(comp.flush())
    return len(tail) / max(cost, 1)


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

    def as_dict(self) -> dict:
        out: dict = {"rep_tail": round(self.rep_tail, 4), "tail_cr": round(self.tail_cr, 3), "cr": round(self.cr, 3)}
        if self.cr_ref is not None:
            out["cr_ref"] = round(self.cr_ref, 3)
        for name in ("tail", "tail_norm", "tail_tokens"):
            loop = getattr(self, name)
            if loop is not None:
                out[name] = {"unit_len": loop.unit_len, "copies": round(loop.copies, 2), "span": loop.span,
                             "start": loop.start, "trimmed": loop.trimmed}
        return out


def compute_signals(text: str, cfg: DetectorConfig, token_ids: list[int] | None, cut_off: bool,
                    reference: str | None) -> Signals:
    tail = _tail_loop_with_trim(text, cfg, cut_off)
    tail_norm = None if is_loop(tail, cfg, cut_off) else _counter_loop(text, cfg, cut_off)
    tail_tokens = None
    if token_ids:
        tail_tokens = find_tail_loop(token_string(token_ids), cfg, cut_off=cut_off)
    words = tail_words(text, cfg)
    long_enough = len(text) >= cfg.min_tail_chars
    return Signals(
        tail=tail,
        tail_norm=tail_norm,
        tail_tokens=tail_tokens,
        rep_tail=rep_n(words, cfg.ngram) if long_enough else 0.0,
        tail_cr=tail_compression_ratio(text, cfg.tail_fraction) if long_enough else 0.0,
        cr=compression_ratio(text),
        cr_ref=_reference_features(reference, cfg)[0] if reference else None,
        n_words=len(words),
    )


def _loop_why(name: str, loop: TailLoop, text_len: int, unit: str = "char") -> str:
    trimmed = f", ragged last {loop.trimmed} chars ignored" if loop.trimmed else ""
    return (f"{name}: {loop.unit_len}-{unit} unit × {loop.copies:.1f} copies over the last "
            f"{loop.span} {unit}s (from {unit} {loop.start} of {text_len}){trimmed}")


def _legit(text: str, reference: str, loop: TailLoop | None, sig: Signals, cfg: DetectorConfig) -> bool:
    """True when the reference repeats the same way, so the repetition is the content itself."""
    if len(text) > 1.5 * len(reference) + 100:
        return False  # far longer than the truth: whatever repeats, it repeats too often
    if loop is not None:
        # The reference must hold the same run — most of the copies, back to back — not merely the
        # unit somewhere (a 2-char unit occurs in any text).
        unit = _normalise(text[loop.start : loop.start + loop.unit_len])
        run = max(2, math.ceil(0.75 * min(loop.copies, copies_needed(loop.unit_len, cfg))))
        return bool(unit.strip()) and unit * run in _reference_features(reference, cfg)[1]
    return sig.rep_tail > 0 and _reference_features(reference, cfg)[2] >= 0.8 * sig.rep_tail


def detect(
    text: str,
    *,
    token_ids: list[int] | None = None,
    finish_reason: str | None = None,
    reference: str | None = None,
    cfg: DetectorConfig | None = None,
) -> Degeneration:
    """Judge one candidate: ``degenerate`` | ``suspect`` | ``clean``, with signals and why."""
    cfg = cfg or DEFAULT_DETECTOR
    cut_off = finish_reason in CUT_OFF
    sig = compute_signals(text, cfg, token_ids, cut_off, reference)
    n = len(text)
    verdict, kind, why, loop = "clean", None, "no repetition signal", None
    token_loop = is_loop(sig.tail_tokens, cfg, cut_off, min_span=max(4, cfg.min_span_chars // 4))
    near = sig.rep_tail >= cfg.rep_degenerate and sig.tail_cr >= cfg.tail_cr_degenerate
    near_repeat_stopped = sig.rep_tail >= cfg.rep_stopped and sig.tail_cr >= cfg.tail_cr_stopped
    if is_loop(sig.tail, cfg, cut_off):
        verdict, kind, loop = "degenerate", "tail_loop", sig.tail
        why = _loop_why("tail loop", sig.tail, n)
    elif token_loop:
        assert sig.tail_tokens is not None
        verdict, kind = "degenerate", "token_loop"
        why = _loop_why("token loop", sig.tail_tokens, len(token_ids or []), unit="token")
    elif is_loop(sig.tail_norm, cfg, cut_off):
        verdict, kind, loop = ("degenerate" if cut_off else "suspect"), "counter_loop", sig.tail_norm
        why = _loop_why("loop up to numbers/spacing", sig.tail_norm, n)
    elif near or near_repeat_stopped:
        verdict, kind = ("degenerate" if cut_off or near_repeat_stopped else "suspect"), "near_repeat"
        why = (f"near-repeats: rep-{cfg.ngram} {sig.rep_tail:.2f} over the last words, "
               f"tail compresses {sig.tail_cr:.1f}×")
    elif cut_off and sig.cr_ref and sig.cr >= cfg.ref_cr_degenerate * sig.cr_ref:
        verdict, kind = "degenerate", "compression"
        why = f"compresses {sig.cr / sig.cr_ref:.1f}× better than the reference ({sig.cr:.2f} vs {sig.cr_ref:.2f})"
    else:
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
        if weak:
            verdict, kind, why = "suspect", "weak_repetition", "; ".join(weak)
    unit_text = text[loop.start : loop.start + loop.unit_len] if loop is not None else ""
    if verdict != "clean" and reference is not None and _legit(text, reference, loop, sig, cfg):
        verdict, kind = "clean", "legit_repetition"
        why = f"repetition the reference has too ({why})"
    if cut_off:
        why += "; cut off at max_tokens" if finish_reason == "length" else "; stopped by the loop early-stop"
    severity = 0.0
    if verdict != "clean":
        covered = (loop.span / n) if loop is not None and n else 0.0
        severity = round(min(1.0, max(covered, sig.rep_tail)), 4)
    return Degeneration(
        verdict=verdict, kind=kind, why=why, severity=severity, signals=sig.as_dict(),
        unit=unit_text[:200] or None, start_char=loop.start if loop else None,
        copies=round(loop.copies, 2) if loop else None,
    )


DEFAULT_DETECTOR = DetectorConfig()
