"""Fidelity of a candidate against its reference. Pure functions.

* ``cer`` — character edit distance / len(reference), unbounded: a loop pushes it above 1, which is
  informative (rapidfuzz's ``normalized_distance`` divides by the longer string and saturates).
  Equal to ``jiwer.cer`` on the normalised strings.
* ``wer`` — the same over whitespace-separated words.
* ``similarity`` — 1 − distance / max(len) (bounded, symmetric).
* ``composite`` — DharmaOCR's quality score: (Levenshtein ratio + BLEU-4) / 2.
* ``coverage`` — the share of the reference's words the candidate reproduces *in order*: the longest
  common subsequence of the two word lists / the reference's word count. Extra words (a preamble, a
  loop) cost nothing; words left out do. 1 for a full copy, 0.31 for one that stops after 31 % of the
  words. CER cannot show an early stop once loops have pushed it above 1; coverage can. Scripts written
  without spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) count each character as a word, so
  a Japanese page is not one "word" that is either all there or missing.

Both strings are normalised first: Unicode NFC (a decomposed "Café" is otherwise 2 edits from the
composed one) and collapsed whitespace; each step can be turned off.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from functools import lru_cache

from pydantic import BaseModel, ConfigDict
from rapidfuzz.distance import Indel, LCSseq, Levenshtein


class FidelityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    nfc: bool = True
    collapse_whitespace: bool = True
    lowercase: bool = False


def normalise(text: str, cfg: FidelityConfig) -> str:
    if cfg.nfc:
        text = unicodedata.normalize("NFC", text)
    if cfg.collapse_whitespace:
        text = " ".join(text.split())
    if cfg.lowercase:
        text = text.lower()
    return text


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate on already-normalised strings."""
    if not reference:
        return 0.0 if not hypothesis else float(len(hypothesis))
    return Levenshtein.distance(hypothesis, reference) / len(reference)


def wer(hypothesis: str, reference: str) -> float:
    ref_words, hyp_words = reference.split(), hypothesis.split()
    if not ref_words:
        return 0.0 if not hyp_words else float(len(hyp_words))
    return Levenshtein.distance(hyp_words, ref_words) / len(ref_words)


# scripts written without spaces between words: each character counts as a word for coverage
_NO_SPACE = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_NO_SPACE}]|[^\\s{_NO_SPACE}]+")


def words(text: str) -> list[str]:
    """Whitespace-separated words, with each character of a script written without spaces on its own."""
    return _WORD.findall(text)


def coverage(hypothesis: str, reference: str) -> float:
    """Share of the reference's words reproduced in order (LCS over words), on normalised strings."""
    ref_words = words(reference)
    if not ref_words:
        return 1.0
    return LCSseq.similarity(words(hypothesis), ref_words) / len(ref_words)


def word_ratio(hypothesis: str, reference: str, cfg: FidelityConfig | None = None) -> float | None:
    """The candidate's word count / the reference's (as ``coverage`` counts words); None for an empty reference."""
    cfg = cfg or FidelityConfig()
    ref_words = words(normalise(reference, cfg))
    return len(words(normalise(hypothesis, cfg))) / len(ref_words) if ref_words else None


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(zip(*(words[i:] for i in range(n)), strict=False))  # ragged on purpose


@lru_cache(maxsize=64)
def _reference_ngrams(reference: str) -> tuple[int, list[Counter]]:
    """A reference's word count and 1..4-gram counts: computed once for all of its candidates."""
    words = reference.split()
    return len(words), [_ngrams(words, n) for n in range(1, 5)]


def bleu4(hypothesis: str, reference: str) -> float:
    """Sentence BLEU-4 over words: uniform weights, brevity penalty, +0.1 for zero matches (Chen &
    Cherry 2014, method 1), and the effective order of sacrebleu: n-gram orders longer than the
    hypothesis are left out, so identical two-word texts score 1, not 0.3."""
    hyp = hypothesis.split()
    ref_len, ref_ngrams = _reference_ngrams(reference)
    if not hyp or not ref_len:
        return float(not hyp and not ref_len)
    log_precisions = []
    for n in range(1, min(4, len(hyp)) + 1):
        hyp_ngrams = _ngrams(hyp, n)
        matches = sum(min(count, ref_ngrams[n - 1][gram]) for gram, count in hyp_ngrams.items())
        log_precisions.append(math.log((matches or 0.1) / (len(hyp) - n + 1)))
    brevity = 1.0 if len(hyp) > ref_len else math.exp(1 - ref_len / len(hyp))
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def fidelity(hypothesis: str, reference: str, cfg: FidelityConfig | None = None) -> dict[str, float]:
    """All fidelity metrics of one candidate against its reference."""
    cfg = cfg or FidelityConfig()
    hyp, ref = normalise(hypothesis, cfg), normalise(reference, cfg)
    lev_ratio = Indel.normalized_similarity(hyp, ref)  # python-Levenshtein's ratio()
    bleu = bleu4(hyp, ref)
    distance = Levenshtein.distance(hyp, ref)  # once, for both CER and similarity
    longest = max(len(hyp), len(ref))
    return {
        "cer": round(distance / len(ref) if ref else float(len(hyp)), 6),
        "wer": round(wer(hyp, ref), 6),
        "similarity": round(1 - distance / longest if longest else 1.0, 6),
        "bleu4": round(bleu, 6),
        "composite": round((lev_ratio + bleu) / 2, 6),
        "coverage": round(coverage(hyp, ref), 6),
    }
