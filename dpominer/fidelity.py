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
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import repeat
from operator import add, mul

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
    return _wer(hypothesis.split(), reference.split())


def _wer(hyp_words: list[str], ref_words: list[str]) -> float:
    if not ref_words:
        return 0.0 if not hyp_words else float(len(hyp_words))
    return _distance(Levenshtein, hyp_words, ref_words) / len(ref_words)


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


VECTOR_WORDS = 128  # from this many hypothesis words on, numpy counts n-grams (below, its call overhead loses)


@dataclass
class _ReferenceNgrams:
    """A reference's words as integer ids (from 1) and, per order 1..4, its n-gram counts keyed by one
    integer per n-gram and whether every count is 1."""

    length: int
    vocab: dict[str, int]
    ids: list[int]
    counts: list[Counter]
    distinct: list[bool]

    @cached_property
    def sorted_counts(self):
        """Per order: (sorted unique n-gram keys, their counts) as numpy arrays, for long hypotheses."""
        import numpy as np

        keys = _ngram_keys(np.array(self.ids, dtype=np.int64), len(self.vocab) + 1)
        return [np.unique(k, return_counts=True) for k in keys]


@lru_cache(maxsize=64)
def _reference_ngrams(reference: str) -> _ReferenceNgrams:
    """Computed once for all of a reference's candidates."""
    words = reference.split()
    vocab: dict[str, int] = {}
    ids = [vocab.setdefault(w, len(vocab) + 1) for w in words]
    counts = [Counter(keys) for keys in _ngram_keys(ids, len(vocab) + 1)]
    return _ReferenceNgrams(len(words), vocab, ids, counts, [len(c) == sum(c.values()) for c in counts])


def _ngram_keys(ids, base: int) -> list:
    """The 1..4-grams of ``ids`` (a list, or a numpy int64 array), each as one integer: its ids as digits
    in ``base``, so equal n-grams of one order, and only they, get equal keys."""
    orders = [ids]
    for n in range(2, 5):
        if isinstance(ids, list):  # key·base + next id at every position (map keeps the loop in C)
            orders.append(list(map(add, map(mul, orders[-1], repeat(base)), ids[n - 1:])))
        else:
            orders.append(orders[-1][:-1] * base + ids[n - 1:])
    return orders


def _clipped_matches(hyp_keys: list[int], ref_counts: Counter, ref_distinct: bool) -> int:
    """Σ over n-grams of min(count in the hypothesis, count in the reference)."""
    hyp_set = set(hyp_keys)
    if ref_distinct or len(hyp_set) == len(hyp_keys):  # one side counts 1 each: min is 1 per shared n-gram
        return len(hyp_set.intersection(ref_counts))
    hyp_counts = Counter(hyp_keys)
    return sum(map(min, hyp_counts.values(), map(ref_counts.get, hyp_counts, repeat(0))))


def _clipped_matches_vector(hyp_keys, ref_sorted) -> int:
    """The same for a numpy array of keys against the reference's (sorted unique keys, counts)."""
    import numpy as np

    keys, counts = np.unique(hyp_keys, return_counts=True)
    ref_keys, ref_counts = ref_sorted
    at = np.minimum(np.searchsorted(ref_keys, keys), len(ref_keys) - 1)
    shared = ref_keys[at] == keys
    return int(np.minimum(counts[shared], ref_counts[at[shared]]).sum())


def _matches_per_order(hyp: list[str], ref: _ReferenceNgrams, orders: int) -> list[int]:
    base = len(ref.vocab) + 1
    if len(hyp) < VECTOR_WORDS or base**4 >= 2**63:  # short, or keys that would overflow int64
        keys = _ngram_keys(list(map(ref.vocab.get, hyp, repeat(0))), base)
        return [_clipped_matches(keys[n], ref.counts[n], ref.distinct[n]) for n in range(orders)]
    import numpy as np

    keys = _ngram_keys(np.fromiter(map(ref.vocab.get, hyp, repeat(0)), np.int64, len(hyp)), base)
    return [_clipped_matches_vector(keys[n], ref.sorted_counts[n]) for n in range(orders)]


def bleu4(hypothesis: str, reference: str, hyp_words: list[str] | None = None) -> float:
    """Sentence BLEU-4 over words: uniform weights, brevity penalty, +0.1 for zero matches (Chen &
    Cherry 2014, method 1), and the effective order of sacrebleu: n-gram orders longer than the
    hypothesis are left out, so identical two-word texts score 1, not 0.3.

    Words are integer ids (0 for a word the reference lacks, which no reference n-gram holds) and an
    n-gram is one integer: clipped counts are a set intersection where one side repeats no n-gram of
    that order, and numpy's sorted counts for long hypotheses. ``hyp_words``: the split hypothesis."""
    hyp = hypothesis.split() if hyp_words is None else hyp_words
    ref = _reference_ngrams(reference)
    if not hyp or not ref.length:
        return float(not hyp and not ref.length)
    log_precisions = [math.log((matches or 0.1) / (len(hyp) - n)) for n, matches in
                      enumerate(_matches_per_order(hyp, ref, min(4, len(hyp))))]
    brevity = 1.0 if len(hyp) > ref.length else math.exp(1 - ref.length / len(hyp))
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def _distance(metric, a, b) -> int:
    """``metric.distance(a, b)``, exact, computed in a band around the diagonal that widens until it
    holds the answer: a near-copy costs a thin band instead of the whole len(a)×len(b) table."""
    bound = max(abs(len(a) - len(b)), 32)
    while True:
        distance = metric.distance(a, b, score_cutoff=bound)
        if distance <= bound:
            return distance
        bound *= 4


def fidelity(hypothesis: str, reference: str, cfg: FidelityConfig | None = None) -> dict[str, float]:
    """All fidelity metrics of one candidate against its reference."""
    cfg = cfg or FidelityConfig()
    hyp, ref = normalise(hypothesis, cfg), normalise(reference, cfg)
    total = len(hyp) + len(ref)
    lev_ratio = 1.0 - _distance(Indel, hyp, ref) / total if total else 1.0  # python-Levenshtein's ratio()
    hyp_words = hyp.split()
    bleu = bleu4(hyp, ref, hyp_words)
    distance = _distance(Levenshtein, hyp, ref)  # once, for both CER and similarity
    longest = max(len(hyp), len(ref))
    return {
        "cer": round(distance / len(ref) if ref else float(len(hyp)), 6),
        "wer": round(_wer(hyp_words, ref.split()), 6),
        "similarity": round(1 - distance / longest if longest else 1.0, 6),
        "bleu4": round(bleu, 6),
        "composite": round((lev_ratio + bleu) / 2, 6),
        "coverage": round(coverage(hyp, ref), 6),
    }
