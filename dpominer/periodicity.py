"""Periodicity and compression primitives of the loop detector. Pure functions on strings.

A tail loop is found by the periodicity of the text's suffix (``find_tail_loop``): candidate unit
lengths come from where the last characters occur again, each verified by an exponential search plus
bisection over slice compares — near-linear, C-speed. Token ids run through the same search as a string
of one code point per token (``token_string``). ``_counter_loop`` repeats the search with digit runs
and whitespace collapsed, for counters ("step 1, step 2, …").
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .degeneration import DetectorConfig

@dataclass(frozen=True)
class TailLoop:
    unit_len: int  # characters (or tokens, for the token-level pass)
    span: int  # length of the periodic suffix, last partial copy included
    start: int  # offset in the text where the periodic suffix starts
    copies: float  # span / unit_len
    trimmed: int = 0  # characters dropped from the end before the loop was found
    norm_unit: str = ""  # counter loops: the unit with numbers as 0 and spacing collapsed


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
    longest = end - probe_len - lo  # the largest unit length the search can meet
    covered: set[int] = set()  # multiples k·p (k ≥ 2) of verified units p that fit inside p's span
    best: TailLoop | None = None
    best_key = (False, 0.0)
    j = s.rfind(probe, lo, end - 1)
    while j != -1:
        p = end - probe_len - j
        if p not in covered:
            span = p + _periodic_extent(s, end, p, probe_len)
            covered.update(range(2 * p, min(span, longest) + 1, p))
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


def tail_loop_with_trim(text: str, cfg: DetectorConfig, cut_off: bool) -> TailLoop | None:
    """Tail loop at the very end; when cut off, also after dropping a ragged end (as Chandra does)."""
    loop = find_tail_loop(text, cfg, cut_off=cut_off)
    if is_loop(loop, cfg, cut_off) or not cut_off:
        return loop
    for trim in (8, 50):
        if len(text) - trim < cfg.min_span_chars:
            break
        trimmed = find_tail_loop(text, cfg, end=len(text) - trim, cut_off=cut_off)
        # a run of spaces before a ragged end is indentation, not a loop the model fell into
        if is_loop(trimmed, cfg, cut_off) and not text[trimmed.start : trimmed.start + trimmed.unit_len].isspace():
            return TailLoop(trimmed.unit_len, trimmed.span, trimmed.start, trimmed.copies, trim)
    return loop


_DIGITS = re.compile(r"\d+")
_RUNS = re.compile(r"\d+|\s+")
_ASCII_DIGITS = b"0123456789"


_TO_ZERO = str.maketrans("123456789", "000000000")
_ZEROS = re.compile("00+")


def fold_digits(text: str) -> str:
    """Every digit run → "0". ASCII text takes a translate + a literal-prefixed regex (~4× faster than
    scanning with \\d+); other text keeps the Unicode-aware regex."""
    if not text.isascii():
        return _DIGITS.sub("0", text)
    folded = text.translate(_TO_ZERO)
    return _ZEROS.sub("0", folded) if "00" in folded else folded


def has_digits(text: str) -> bool:
    if not text.isascii():
        return _DIGITS.search(text) is not None
    raw = text.encode("ascii")
    return len(raw.translate(None, _ASCII_DIGITS)) != len(raw)  # ~20× faster than a regex scan


def normalise(text: str) -> str:
    """Digit runs → '0', whitespace runs → ' ': counters and spacing stop breaking periodicity."""
    if has_digits(text):
        text = fold_digits(text)
    inner = " ".join(text.split())  # C speed; keep one space for leading/trailing runs too
    lead = " " if text[:1].isspace() and inner else ""
    trail = " " if text[-1:].isspace() else ""
    return lead + inner + trail


def _original_offset(window: str, norm_pos: int) -> int:
    """Map a position in ``normalise(window)`` back to ``window`` (each run shrinks to one char)."""
    shrunk = 0  # characters removed by the runs before the current one
    for m in _RUNS.finditer(window):
        if m.start() - shrunk >= norm_pos:
            break
        if m.start() - shrunk + 1 > norm_pos:  # inside this run's single normalised char
            return m.start()
        shrunk += len(m.group()) - 1
    return norm_pos + shrunk


def counter_loop(text: str, cfg: DetectorConfig, cut_off: bool) -> TailLoop | None:
    """Tail loop of the normalised text, mapped back to offsets in ``text``.

    Searched in the last 1 KB first (normalising costs more than the exact search); only a loop
    that fills that window is searched again over the whole tail window, to find where it starts.
    """
    for width in (1024, cfg.window_chars):
        offset = max(0, len(text) - width)
        window = text[offset:]
        norm = normalise(window)
        found = find_tail_loop(norm, cfg, cut_off=cut_off) if norm != window else None
        if found is None or found.start > 0 or offset == 0 or width == cfg.window_chars:
            break
    if found is None:
        return None
    unit = norm[len(norm) - found.unit_len :]  # the suffix is periodic: its last unit_len chars are a unit
    if not is_loop(found, cfg, cut_off):  # reported for `suspect`; offsets only matter for real loops
        return TailLoop(found.unit_len, found.span, offset + found.start, found.copies, norm_unit=unit)
    start = offset + _original_offset(window, found.start)
    return TailLoop(found.unit_len, len(text) - start, start, found.copies, norm_unit=unit)


def token_string(ids: list[int]) -> str:
    """Token ids as a string (one code point each), so the same C-speed search runs on tokens."""
    return "".join(chr(i + 0x800) if i >= 0xD800 else chr(i) for i in ids)




def rep_n(words: list[str], n: int) -> float:
    """seq-rep-n: 1 − |unique n-grams| / |n-grams| (Welleck et al. 2019)."""
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    if n == 4:  # the default, spelled out: ~15 % faster than the general zip below
        grams = set(zip(words, words[1:], words[2:], words[3:], strict=False))
    else:
        grams = set(zip(*(words[i:] for i in range(n)), strict=False))  # ragged on purpose
    return 1.0 - len(grams) / total


def tail_words(text: str, cfg: DetectorConfig) -> list[str]:
    """The last words, lower-cased, split on whitespace (punctuation stays on the word: loops repeat
    it too), with digit runs as '0' so counters read as repeats. ~12 chars a word is generous."""
    tail = text[-cfg.rep_words * 12 :].lower()
    if has_digits(tail):
        tail = fold_digits(tail)
    return tail.split()[-cfg.rep_words :]


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
    head = data[max(0, cut - context) : cut]
    if head and _PRESET_DICTIONARY:  # the context is hashed into the history, never compressed
        comp = zlib.compressobj(6, zlib.DEFLATED, -12, 4, zdict=head)
    else:
        comp = zlib.compressobj(6, zlib.DEFLATED, -12, 4)
        comp.compress(head)
        comp.flush(zlib.Z_SYNC_FLUSH)  # byte-aligns the head; the history stays for the tail
    cost = len(comp.compress(tail)) + len(comp.flush())
    return len(tail) / max(cost, 1)


# zlib's deflate leaves the same window and hash chains after a preset dictionary as after compressing
# those bytes and a sync flush, so the tail costs the same bytes (tests/test_degeneration.py checks it
# on this zlib); zlib-ng is another implementation, and keeps the compress-then-flush way.
_PRESET_DICTIONARY = "ng" not in zlib.ZLIB_RUNTIME_VERSION.lower()
