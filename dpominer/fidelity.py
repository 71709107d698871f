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

Speed (``score`` and ``pair`` measure every candidate): what depends on the reference alone (its
normal form, words, word ids, n-gram counts) is computed once per document (:func:`_prepared`). A
candidate's words become one code point each (its word's id in the reference's vocabulary, a code no
reference word has for the others), so WER and coverage run rapidfuzz on strings, and BLEU-4 counts
integer n-grams: the same numbers as over word lists, a fraction of the time.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain, repeat
from operator import add, mul
from typing import Any

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


def _normalised_words(text: str, cfg: FidelityConfig) -> tuple[str, list[str]]:
    """(``normalise(text, cfg)``, its whitespace words), splitting once where whitespace is collapsed."""
    if cfg.collapse_whitespace and not cfg.lowercase:
        split = (unicodedata.normalize("NFC", text) if cfg.nfc else text).split()
        return " ".join(split), split
    text = normalise(text, cfg)
    return text, text.split()


def cer(hypothesis: str, reference: str) -> float:
    """Character error rate on already-normalised strings."""
    if not reference:
        return 0.0 if not hypothesis else float(len(hypothesis))
    return Levenshtein.distance(hypothesis, reference) / len(reference)


def wer(hypothesis: str, reference: str) -> float:
    hyp_words, ref_words = hypothesis.split(), reference.split()
    if not ref_words:
        return 0.0 if not hyp_words else float(len(hyp_words))
    return _distance(Levenshtein, hyp_words, ref_words) / len(ref_words)


# scripts written without spaces between words: each character counts as a word for coverage
_NO_SPACE = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(f"[{_NO_SPACE}]|[^\\s{_NO_SPACE}]+")
_HAS_NO_SPACE = re.compile(f"[{_NO_SPACE}]")


def words(text: str) -> list[str]:
    """Whitespace-separated words, with each character of a script written without spaces on its own."""
    return _WORD.findall(text)


def _plain(text: str) -> bool:
    """No character of a script written without spaces: ``words(text) == text.split()`` (the regex's
    ``\\s`` and ``str.split`` agree on every code point)."""
    return text.isascii() or _HAS_NO_SPACE.search(text) is None


def coverage(hypothesis: str, reference: str) -> float:
    """Share of the reference's words reproduced in order (LCS over words), on normalised strings."""
    ref_words = words(reference)
    if not ref_words:
        return 1.0
    return LCSseq.similarity(words(hypothesis), ref_words) / len(ref_words)


def word_ratio(hypothesis: str, reference: str, cfg: FidelityConfig | None = None) -> float | None:
    """The candidate's word count / the reference's (as ``coverage`` counts words); None for an empty reference."""
    cfg = cfg or FidelityConfig()
    ref = _prepared(reference, cfg)
    if not ref.n_words:
        return None
    hyp, hyp_split = _normalised_words(hypothesis, cfg)
    return len(hyp_split if _plain(hyp) else words(hyp)) / ref.n_words


VECTOR_WORDS = 32  # from this many hypothesis words on, numpy counts n-grams (below, its call overhead loses)
_SURROGATES = range(0xD800, 0xE000)  # not characters: skipped
CODE_POINTS = 0x110000 - len(_SURROGATES) - 1  # distinct words one string can encode (ids from 1)


def _vocabulary(tokens: list[str]) -> tuple[dict[str, Any], Any]:
    """Each distinct token → one code point (from 1, surrogates skipped), in order of first appearance,
    and the tokens encoded with them: a string. Past ``CODE_POINTS`` distinct tokens the codes are ints
    and the encoding a list, which rapidfuzz and the n-gram counts treat the same way, only slower."""
    distinct = dict.fromkeys(tokens)
    if len(distinct) > CODE_POINTS:
        ids = dict(zip(distinct, range(1, len(distinct) + 1), strict=True))
        return ids, list(map(ids.__getitem__, tokens))
    codes = map(chr, chain(range(1, _SURROGATES.start), range(_SURROGATES.stop, 0x110000)))
    vocab = dict(zip(distinct, codes, strict=False))
    return vocab, "".join(map(vocab.__getitem__, tokens))


def _encode(tokens: list[str], vocab: dict[str, Any]) -> Any:
    """``tokens`` in ``vocab``'s codes; a token it lacks gets 0 ("\\0"), which no vocabulary entry has."""
    if not vocab or isinstance(next(iter(vocab.values())), str):
        return "".join(map(vocab.get, tokens, repeat("\0")))
    return list(map(vocab.get, tokens, repeat(0)))


def _ids(codes: Any) -> list[int]:
    return list(map(ord, codes)) if isinstance(codes, str) else codes


@dataclass
class _ReferenceNgrams:
    """A reference's words as integer ids (one code point each) and, per order 1..4, its n-gram counts
    keyed by one integer per n-gram and whether every count is 1."""

    length: int
    vocab: dict[str, Any]
    codes: Any  # the words encoded (a string, or a list of ints for a huge vocabulary)
    base: int  # the radix of the n-gram keys: above every id, and ``base - 1`` no reference word has

    @cached_property
    def counts(self) -> list[Counter]:
        """Per order, for short hypotheses: n-gram key → count."""
        return [Counter(keys) for keys in _ngram_keys(_ids(self.codes), self.base)]

    @cached_property
    def distinct(self) -> list[bool]:
        """Per order: every n-gram occurs once."""
        return [len(c) == sum(c.values()) for c in self.counts]

    @cached_property
    def sorted_keys(self):
        """Numpy, for long hypotheses: (the sorted distinct n-gram keys of all four orders between a
        -1 and an int64-max sentinel, so every lookup lands on an index; their counts, 0 for the
        sentinels; the indices whose running count differences are the per-order sums).

        An order-n key has n digits in ``base`` with a non-zero leading one (ids start at 1), so it lies
        in [baseⁿ⁻¹, baseⁿ): the orders share one array without offsets."""
        import numpy as np

        every = np.concatenate(([-1], *_ngram_keys(_as_array(self.codes), self.base), [np.iinfo(np.int64).max]))
        every.sort()
        first = np.flatnonzero(np.concatenate(([True], every[1:] != every[:-1], [True])))  # np.unique, fewer calls
        keys, counts = every[first[:-1]], first[1:] - first[:-1]
        counts[[0, -1]] = 0  # the sentinels
        starts = np.searchsorted(keys, [self.base**n for n in range(5)])  # order n+1 from starts[n]
        return keys, counts, starts - 1


def _reference_ngrams_of(ref_words: list[str]) -> _ReferenceNgrams:
    vocab, codes = _vocabulary(ref_words)
    base = (max(codes) if isinstance(codes, list) else ord(max(codes))) + 2 if codes else 2
    return _ReferenceNgrams(len(ref_words), vocab, codes, base)


@lru_cache(maxsize=64)
def _reference_ngrams(reference: str) -> _ReferenceNgrams:
    """Computed once for all of a reference's candidates (``bleu4`` on its own)."""
    return _reference_ngrams_of(reference.split())


def _as_array(codes: Any):
    import numpy as np

    if isinstance(codes, str):  # one code point per word: the UTF-32 bytes are the ids
        return np.frombuffer(codes.encode("utf-32-le"), np.uint32).astype(np.int64)
    return np.array(codes, dtype=np.int64)


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


def _clipped_matches_vectors(hyp_codes: list[Any], ref: _ReferenceNgrams) -> list[list[int]]:
    """The same for all four orders of several hypotheses at once, with numpy: each n-gram looked up
    among the reference's sorted keys, the hits counted per (hypothesis, reference n-gram) and clipped
    there. A word the reference lacks (id 0) becomes ``base - 1``, so its n-grams keep a non-zero
    leading digit (their order's key range) and match nothing; the hypotheses are joined with such a
    word between them, so no n-gram that spans two can match. Few numpy calls for all of them: on short
    texts each call's overhead is the cost."""
    import numpy as np

    ref_keys, ref_counts, order_ends = ref.sorted_keys
    if all(isinstance(codes, str) for codes in hyp_codes):
        ids = _as_array("\0".join(hyp_codes))
    else:  # a vocabulary past the code points: lists of ids
        ids = _as_array([i for codes in hyp_codes for i in (*_ids(codes), 0)][:-1])
    ids[ids == 0] = ref.base - 1
    at = ref_keys.searchsorted(keys := np.concatenate(_ngram_keys(ids, ref.base)))
    starts_in = np.repeat(np.arange(len(hyp_codes)), [len(codes) + 1 for codes in hyp_codes])[: len(ids)]
    owner = np.concatenate([starts_in[: len(ids) - n] for n in range(4)])  # the hypothesis of each key
    hit = ref_keys[at] == keys
    hits = np.bincount(owner[hit] * len(ref_keys) + at[hit], minlength=len(hyp_codes) * len(ref_keys))
    running = np.minimum(hits.reshape(len(hyp_codes), -1), ref_counts).cumsum(axis=1)[:, order_ends]
    return (running[:, 1:] - running[:, :-1]).tolist()


VECTOR_CELLS = 1 << 20  # hypotheses × reference n-grams counted in one call (int64 each): bounds its memory


def _matches_many(hyp_codes: list[Any], n_hyps: list[int], ref: _ReferenceNgrams) -> list[list[int]]:
    """Per hypothesis, the clipped matches of each n-gram order up to min(4, its words)."""
    out: list[Any] = [None] * len(hyp_codes)
    long_ = [i for i, n in enumerate(n_hyps) if n >= VECTOR_WORDS] if ref.base**4 < 2**63 else []  # int64 keys
    if long_:
        per_call = max(1, VECTOR_CELLS // len(ref.sorted_keys[0]))
        for start in range(0, len(long_), per_call):
            group = long_[start:start + per_call]
            for i, matches in zip(group, _clipped_matches_vectors([hyp_codes[i] for i in group], ref), strict=True):
                out[i] = matches
    for i, n_hyp in enumerate(n_hyps):
        if out[i] is None:
            keys = _ngram_keys(_ids(hyp_codes[i]), ref.base)
            out[i] = [_clipped_matches(keys[n], ref.counts[n], ref.distinct[n]) for n in range(min(4, n_hyp))]
    return out


def _bleu(matches: list[int], n_hyp: int, ref: _ReferenceNgrams) -> float:
    """BLEU-4 from the clipped matches of each order (:func:`_matches_many`)."""
    if not n_hyp or not ref.length:
        return float(not n_hyp and not ref.length)
    log_precisions = [math.log((hits or 0.1) / (n_hyp - n)) for n, hits in enumerate(matches)]
    brevity = 1.0 if n_hyp > ref.length else math.exp(1 - ref.length / n_hyp)
    return brevity * math.exp(sum(log_precisions) / len(log_precisions))


def bleu4(hypothesis: str, reference: str) -> float:
    """Sentence BLEU-4 over words: uniform weights, brevity penalty, +0.1 for zero matches (Chen &
    Cherry 2014, method 1), and the effective order of sacrebleu: n-gram orders longer than the
    hypothesis are left out, so identical two-word texts score 1, not 0.3.

    Words are integer ids (0 for a word the reference lacks, which no reference n-gram holds) and an
    n-gram is one integer: clipped counts are a set intersection where one side repeats no n-gram of
    that order, and one numpy sort over all orders for long hypotheses."""
    ref = _reference_ngrams(reference)
    hyp = hypothesis.split()
    return _bleu(_matches_many([_encode(hyp, ref.vocab)], [len(hyp)], ref)[0], len(hyp), ref)


def _distance(metric, a, b) -> int:
    """``metric.distance(a, b)``, exact, computed in a band around the diagonal that widens until it
    holds the answer: a near-copy costs a thin band instead of the whole len(a)×len(b) table. It starts
    at 31, the widest band (63) that fits one machine word: rapidfuzz's fastest path."""
    bound = max(abs(len(a) - len(b)), 31)
    while True:
        distance = metric.distance(a, b, score_cutoff=bound)
        if distance <= bound:
            return distance
        bound *= 4


@dataclass
class _Reference:
    """A normalised reference and everything a candidate is measured against, built once per document."""

    text: str
    ngrams: _ReferenceNgrams  # its whitespace words (BLEU-4, WER)
    plain: bool  # no script written without spaces: coverage's words are the whitespace words
    n_words: int  # coverage's words

    @cached_property
    def coverage_words(self) -> tuple[dict[str, Any], Any]:
        """(vocabulary, codes) of coverage's words, where they differ from the whitespace words."""
        return _vocabulary(words(self.text))


@lru_cache(maxsize=64)
def _prepared(reference: str, cfg: FidelityConfig) -> _Reference:
    text, split = _normalised_words(reference, cfg)
    plain = _plain(text)
    return _Reference(text, _reference_ngrams_of(split), plain, len(split) if plain else len(words(text)))


def _coverage_codes(hyp: str, hyp_split: list[str], hyp_codes: Any, ref: _Reference) -> tuple[Any, Any, int]:
    """(hypothesis codes, reference codes, hypothesis word count) of coverage's words."""
    hyp_plain = _plain(hyp)
    if ref.plain and hyp_plain:
        return hyp_codes, ref.ngrams.codes, len(hyp_split)
    vocab, ref_codes = (ref.ngrams.vocab, ref.ngrams.codes) if ref.plain else ref.coverage_words
    hyp_words = hyp_split if hyp_plain else words(hyp)
    return _encode(hyp_words, vocab), ref_codes, len(hyp_words)


def fidelity_many(hypotheses: list[str], reference: str,
                  cfg: FidelityConfig | None = None) -> list[tuple[dict[str, float], float | None]]:
    """:func:`fidelity_and_word_ratio` of several candidates against one reference; BLEU-4's n-grams of
    all of them are counted together (a few numpy calls instead of a few per candidate)."""
    cfg = cfg or FidelityConfig()
    ref = _prepared(reference, cfg)
    normal = [_normalised_words(hypothesis, cfg) for hypothesis in hypotheses]
    codes = [_encode(hyp_split, ref.ngrams.vocab) for _, hyp_split in normal]
    matches = _matches_many(codes, [len(hyp_split) for _, hyp_split in normal], ref.ngrams)
    return [_scores(hyp, hyp_split, hyp_codes, hyp_matches, ref)
            for (hyp, hyp_split), hyp_codes, hyp_matches in zip(normal, codes, matches, strict=True)]


def _scores(hyp: str, hyp_split: list[str], hyp_codes: Any, matches: list[int],
            ref: _Reference) -> tuple[dict[str, float], float | None]:
    """One normalised candidate's metrics, and its word ratio."""
    ngrams = ref.ngrams
    distance = _distance(Levenshtein, hyp, ref.text)  # once, for both CER and similarity
    # every substitution is a deletion and an insertion: the Indel distance is at most twice this
    indel = Indel.distance(hyp, ref.text, score_cutoff=2 * distance)
    total = len(hyp) + len(ref.text)
    lev_ratio = 1.0 - indel / total if total else 1.0  # python-Levenshtein's ratio()
    bleu = _bleu(matches, len(hyp_split), ngrams)
    if ngrams.length:
        wer_ = _distance(Levenshtein, hyp_codes, ngrams.codes) / ngrams.length
    else:
        wer_ = 0.0 if not hyp_split else float(len(hyp_split))
    cover_hyp, cover_ref, n_hyp_words = _coverage_codes(hyp, hyp_split, hyp_codes, ref)
    cover = LCSseq.similarity(cover_hyp, cover_ref) / ref.n_words if ref.n_words else 1.0
    longest = max(len(hyp), len(ref.text))
    scores = {
        "cer": round(distance / len(ref.text) if ref.text else float(len(hyp)), 6),
        "wer": round(wer_, 6),
        "similarity": round(1 - distance / longest if longest else 1.0, 6),
        "bleu4": round(bleu, 6),
        "composite": round((lev_ratio + bleu) / 2, 6),
        "coverage": round(cover, 6),
    }
    return scores, n_hyp_words / ref.n_words if ref.n_words else None


def fidelity_and_word_ratio(hypothesis: str, reference: str,
                            cfg: FidelityConfig | None = None) -> tuple[dict[str, float], float | None]:
    """:func:`fidelity`, and :func:`word_ratio` from the same words."""
    return fidelity_many([hypothesis], reference, cfg)[0]


def fidelity(hypothesis: str, reference: str, cfg: FidelityConfig | None = None) -> dict[str, float]:
    """All fidelity metrics of one candidate against its reference."""
    return fidelity_and_word_ratio(hypothesis, reference, cfg)[0]
