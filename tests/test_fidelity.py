from __future__ import annotations

import math
import random
from collections import Counter

import jiwer
import pytest

from dpominer.fidelity import FidelityConfig, bleu4, cer, fidelity, normalise, wer


def _random_pairs(n=300):
    rng = random.Random(0)
    alphabet = "abcde fghé ñ日本\n"
    for _ in range(n):
        ref = "".join(rng.choices(alphabet, k=rng.randrange(1, 60))).strip() or "x"
        hyp = "".join(rng.choices(alphabet, k=rng.randrange(0, 120)))
        yield hyp, ref


def test_cer_equals_jiwer_on_normalised_strings():
    cfg = FidelityConfig()
    for hyp, ref in _random_pairs():
        h, r = normalise(hyp, cfg), normalise(ref, cfg)
        if not r:
            continue
        assert fidelity(hyp, ref)["cer"] == pytest.approx(jiwer.cer(r, h), abs=1e-6)


def test_wer_equals_jiwer():
    for hyp, ref in _random_pairs():
        h, r = normalise(hyp, FidelityConfig()), normalise(ref, FidelityConfig())
        if not r or not h:
            continue
        assert wer(h, r) == pytest.approx(jiwer.wer(r, h))


def test_cer_is_unbounded_for_loops():
    ref = "the quick brown fox"
    assert cer(ref + " jumps" * 20, ref) > 1.0  # informative, unlike a max-length normalisation


def test_nfc_and_whitespace_normalisation():
    composed, decomposed = "Caf\u00e9  au\nlait", "Cafe\u0301 au lait"
    assert fidelity(decomposed, composed)["cer"] == 0.0
    raw = FidelityConfig(nfc=False, collapse_whitespace=False)
    # scores are rounded to 6 places
    assert fidelity(decomposed, composed, raw)["cer"] == pytest.approx(3 / len(composed), abs=1e-6)


def test_bleu4_by_hand():
    assert bleu4("a b c d", "a b c d") == pytest.approx(1.0)
    # hyp "a b c x" vs ref "a b c d": p1=3/4, p2=2/3, p3=1/2, p4=0 → smoothed 0.1/1; same length, no brevity penalty
    expected = math.exp((math.log(3 / 4) + math.log(2 / 3) + math.log(1 / 2) + math.log(0.1)) / 4)
    assert bleu4("a b c x", "a b c d") == pytest.approx(expected)
    # brevity penalty: hyp 2 words vs ref 4 → exp(1 - 4/2); effective order 2, both orders match fully
    assert bleu4("a b", "a b c d") == pytest.approx(math.exp(1 - 2))


def test_composite_is_dharma_style_mean():
    scores = fidelity("a b c x", "a b c d")
    lev_ratio = 1 - 2 / 14  # Indel distance 2 over the summed lengths 7 + 7
    assert scores["composite"] == pytest.approx((lev_ratio + scores["bleu4"]) / 2, abs=1e-6)
    assert fidelity("same text", "same text") == {"cer": 0.0, "wer": 0.0, "similarity": 1.0, "bleu4": 1.0,
                                                  "composite": 1.0, "coverage": 1.0}


def test_coverage_is_the_share_of_reference_words_in_order():
    # worked by hand: reference 4 words; "a b x c" keeps a, b, c in order → 3/4
    assert fidelity("a b x c", "a b c d")["coverage"] == 0.75
    # order matters: "d c b a" shares only one word in order with "a b c d" → 1/4
    assert fidelity("d c b a", "a b c d")["coverage"] == 0.25
    # extra words (a preamble, a loop) cost nothing; a stop after 2 of 8 words is 0.25
    assert fidelity("Here it is: a b c d a b c d a b c d", "a b c d")["coverage"] == 1.0
    assert fidelity("one two", "one two three four five six seven eight")["coverage"] == 0.25
    # the same normalisation as CER: line breaks, runs of spaces and a decomposed é do not count
    assert fidelity("Cafe\u0301\n\n  one", "Café one")["coverage"] == 1.0
    assert fidelity("", "a b")["coverage"] == 0.0
    assert fidelity("anything", "")["coverage"] == 1.0


def test_coverage_counts_characters_of_scripts_without_spaces():
    # 10 characters; a copy that stops after 5 is at 0.5, one wrong character costs 1/10, not everything
    ref = "東京は日本の首都です"
    assert fidelity("東京は日本", ref)["coverage"] == 0.5
    assert fidelity("東京は日本の首都でス", ref)["coverage"] == 0.9
    assert fidelity("ภาษาไทย", "ภาษาไทยง่าย")["coverage"] == round(7 / 11, 6)  # Thai: 7 of 11 characters, in order
    assert fidelity("Hello 東京", "Hello 東京 world")["coverage"] == 0.75  # mixed: Hello, 東, 京 of 4 words




def _bleu4_with_tuples(hypothesis: str, reference: str) -> float:
    """The textbook form (n-grams as tuples of words), to check the integer-id one against."""
    hyp, ref = hypothesis.split(), reference.split()
    if not hyp or not ref:
        return float(not hyp and not ref)
    logs = []
    for n in range(1, min(4, len(hyp)) + 1):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        logs.append(math.log((sum(min(c, r[g]) for g, c in h.items()) or 0.1) / (len(hyp) - n + 1)))
    return (1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))) * math.exp(sum(logs) / len(logs))


def test_fast_bleu_and_banded_distances_equal_the_plain_ones():
    from rapidfuzz.distance import Indel, Levenshtein

    rng = random.Random(7)
    words = ["a", "b", "ab", "ba", "é", "中文", "x"]
    for i in range(400):
        ref = " ".join(rng.choices(words, k=rng.randrange(0, 30 if i % 4 else 400)))  # long: numpy counts
        hyp = " ".join(rng.choices(words, k=rng.randrange(0, 30))) if rng.random() < 0.5 else \
            (ref[:rng.randrange(0, len(ref) + 1)] + " ") * rng.randrange(1, 6)
        assert bleu4(hyp, ref) == pytest.approx(_bleu4_with_tuples(hyp, ref), rel=1e-12, abs=1e-15)
        scores = fidelity(hyp, ref)
        h, r = normalise(hyp, FidelityConfig()), normalise(ref, FidelityConfig())
        assert scores["cer"] == round(Levenshtein.distance(h, r) / len(r) if r else float(len(h)), 6)
        if r.split():
            assert scores["wer"] == round(Levenshtein.distance(h.split(), r.split()) / len(r.split()), 6)
        assert scores["composite"] == round((Indel.normalized_similarity(h, r) + bleu4(h, r)) / 2, 6)


def _coverage_by_regex(hyp: str, ref: str) -> tuple[float, float | None]:
    """Coverage and word ratio over the regex's word lists (the definition), on normalised strings."""
    from rapidfuzz.distance import LCSseq

    from dpominer.fidelity import words

    h, r = words(normalise(hyp, FidelityConfig())), words(normalise(ref, FidelityConfig()))
    if not r:
        return 1.0, None
    return round(LCSseq.similarity(h, r) / len(r), 6), len(h) / len(r)


def test_word_codes_give_the_numbers_of_word_lists_in_every_script_mix():
    from dpominer.fidelity import fidelity_and_word_ratio, word_ratio

    rng = random.Random(11)
    scripts = ["the cat sat on the mat ", "東京は日本の首都です", "ภาษาไทยง่าย", "e\u0301 ñ x\u00a0y\u3000z "]
    for _ in range(300):
        hyp = "".join(rng.choice(scripts)[: rng.randrange(0, 20)] for _ in range(rng.randrange(0, 6)))
        ref = "".join(rng.choice(scripts)[: rng.randrange(0, 20)] for _ in range(rng.randrange(0, 6)))
        scores, ratio = fidelity_and_word_ratio(hyp, ref)
        cover, expected_ratio = _coverage_by_regex(hyp, ref)
        assert scores["coverage"] == cover and ratio == expected_ratio == word_ratio(hyp, ref)
        assert scores == fidelity(hyp, ref)
        h, r = normalise(hyp, FidelityConfig()), normalise(ref, FidelityConfig())
        assert scores["wer"] == round(wer(h, r), 6)
        assert scores["bleu4"] == round(_bleu4_with_tuples(h, r), 6)


def test_a_vocabulary_past_the_code_points_falls_back_to_integer_ids(monkeypatch):
    from dpominer import fidelity as fid

    rng = random.Random(2)
    pairs = []
    for _ in range(40):
        ref = " ".join(f"w{rng.randrange(60)}" for _ in range(rng.randrange(1, 200)))
        hyp = " ".join(f"w{rng.randrange(70)}" for _ in range(rng.randrange(0, 300)))
        pairs.append((hyp, ref + " 東京"))
    expected = [fid.fidelity_and_word_ratio(h, r) for h, r in pairs]
    fid._prepared.cache_clear()
    monkeypatch.setattr(fid, "CODE_POINTS", 5)  # every reference here has more distinct words
    assert isinstance(fid._prepared(pairs[0][1], FidelityConfig()).ngrams.codes, list)
    assert [fid.fidelity_and_word_ratio(h, r) for h, r in pairs] == expected
    fid._prepared.cache_clear()


def test_a_long_candidate_against_a_reference_of_under_four_words():
    # long candidates take the numpy path, which crashed (IndexError) on a reference without 4-grams
    for ref in ("a", "a b", "a b c"):
        hyp = "a b c d " * 60
        assert bleu4(hyp, ref) == pytest.approx(_bleu4_with_tuples(hyp, ref), rel=1e-12)
        assert fidelity(hyp, ref)["bleu4"] == round(_bleu4_with_tuples(hyp, ref), 6)


def test_candidates_measured_together_score_as_one_by_one(monkeypatch):
    """fidelity_many counts BLEU-4's n-grams of all its candidates in one set of numpy calls (joined
    with an unknown word between them): each candidate's scores are the ones it gets alone, whatever
    the mix of short and long candidates, and however many are counted per call."""
    from dpominer import fidelity as fid

    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(80)] + ["東京", "é"]
    for _ in range(30):
        ref = " ".join(rng.choices(vocab[:60], k=rng.randrange(1, 150)))
        hyps = [" ".join(rng.choices(vocab, k=rng.randrange(0, 200))) for _ in range(rng.randrange(1, 9))]
        hyps.append(ref.split()[0] + (" " + ref) * 3)  # a loop of the whole reference
        alone = [fid.fidelity_and_word_ratio(h, ref) for h in hyps]
        assert fid.fidelity_many(hyps, ref) == alone
        monkeypatch.setattr(fid, "VECTOR_CELLS", 1)  # one candidate per call
        assert fid.fidelity_many(hyps, ref) == alone
        monkeypatch.undo()
