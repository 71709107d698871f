from __future__ import annotations

import json
import random
import zlib
from pathlib import Path

import pytest
from conftest import PASSAGE

from dpominer.degeneration import (
    DetectorConfig,
    compression_ratio,
    copies_needed,
    detect,
    find_tail_loop,
    rep_n,
    token_string,
)

CFG = DetectorConfig()


def test_copies_needed_follows_unit_length():
    # 4·(1 + 3/L): short units need many more copies than long ones; cut-off lowers the bar.
    assert copies_needed(1, CFG) == pytest.approx(16.0)
    assert copies_needed(3, CFG) == pytest.approx(8.0)
    assert copies_needed(300, CFG) == pytest.approx(4.04)
    assert copies_needed(300, CFG, cut_off=True) == pytest.approx(3.03)


def test_tail_loop_finds_unit_copies_and_start_even_when_cut_mid_unit():
    unit = "the cat sat on the mat. "  # 24 chars
    text = PASSAGE + unit * 10 + unit[:7]
    loop = find_tail_loop(text, CFG, cut_off=True)
    assert loop is not None
    assert loop.unit_len == 24
    assert loop.start == len(PASSAGE)  # the loop starts exactly where the clean text ends
    assert loop.copies == pytest.approx((10 * 24 + 7) / 24)


def test_exact_loop_is_degenerate_with_why_and_offset():
    unit = "or if any input should be a string, "
    text = PASSAGE + unit * 8 + "or if any"
    result = detect(text, finish_reason="length")
    assert result.verdict == "degenerate" and result.kind == "tail_loop"
    assert result.start_char == len(PASSAGE)
    assert result.unit == unit and result.copies == pytest.approx(8.25)
    assert "cut off at max_tokens" in result.why and "36-char unit" in result.why


def test_few_copies_of_a_short_unit_are_not_a_loop():
    # "!!!" or a 12-dot leader at the end of clean text is not degeneration.
    assert detect(PASSAGE + "!!!", finish_reason="stop").verdict == "clean"
    assert detect(PASSAGE + " Page ............ 4", finish_reason="stop").verdict == "clean"


def test_length_is_a_prior_not_a_verdict():
    assert detect(PASSAGE, finish_reason="length").verdict == "clean"
    # A long unit said twice more: a loop only when the model was cut off in it. (Three copies that
    # stopped are a loop too since the model was fitted on 314 labelled outputs: readers label three
    # copies in a row a loop, stopped or not.)
    text = PASSAGE + (" " + PASSAGE[:80]) * 2
    assert detect(text, finish_reason="length").verdict == "degenerate"
    assert detect(text, finish_reason="stop").verdict != "degenerate"


def test_ragged_end_after_a_loop_is_tolerated_when_cut_off():
    text = PASSAGE + "Host: \n" * 40 + "Hos\ufffd"
    assert detect(text, finish_reason="length").verdict == "degenerate"


def test_counter_loop_cut_off_or_stopped():
    text = PASSAGE + "".join(f"Step {i}: check the value. " for i in range(1, 40))
    assert find_tail_loop(text, CFG) is None or find_tail_loop(text, CFG).copies < 2
    cut = detect(text, finish_reason="length")
    assert (cut.verdict, cut.kind) == ("degenerate", "counter_loop")
    assert cut.start_char == len(PASSAGE)
    # The same sentence under a climbing step number, ended by EOS: still a loop (issue 16).
    stopped = detect(text, finish_reason="stop")
    assert (stopped.verdict, stopped.kind) == ("degenerate", "sentence_repeat")
    # "…encoding.Step 1: …" is one sentence (no space after the full stop): the copies start at step 2
    assert stopped.start_char == text.index("Step 2") and "37 of the last 40 repeat" in stopped.why


def test_near_repeats_with_a_word_swapped_are_caught():
    rng = random.Random(1)
    words = ["file", "socket", "path", "buffer"]
    body = "".join(f"The {rng.choice(words)} object is returned as a tuple of a {rng.choice(words)}. "
                   for _ in range(20))
    result = detect(PASSAGE + " " + body, finish_reason="length")
    assert (result.verdict, result.kind) == ("degenerate", "near_repeat")


def test_repetition_the_reference_has_is_legit():
    counting = "\n".join(str(i) for i in range(1, 60))
    assert detect(counting, finish_reason="length").verdict == "degenerate"  # no reference: looks like a loop
    legit = detect(counting, finish_reason="length", reference=counting)
    assert (legit.verdict, legit.kind) == ("clean", "legit_repetition")
    # ...but not when the candidate repeats far more than the reference does.
    looped = counting + "\n" + "59\n" * 200
    assert detect(looped, finish_reason="length", reference=counting).verdict == "degenerate"


def test_a_table_row_repeated_is_not_excused_by_a_table_reference():
    rows = "| name | size |\n|---|---|\n" + "".join(f"| {w} | {len(w)} |\n" for w in PASSAGE.split()[:20])
    looped = rows + "| bytes | 5 |\n" * 20
    assert detect(rows, finish_reason="stop", reference=rows).verdict == "clean"
    assert detect(looped, finish_reason="length", reference=rows).verdict == "degenerate"


def test_token_level_loop():
    ids = list(range(100, 160)) + [7, 8, 9] * 30
    result = detect(PASSAGE, token_ids=ids, finish_reason="length")
    assert (result.verdict, result.kind) == ("degenerate", "token_loop")
    assert result.signals["tail_tokens"]["unit_len"] == 3
    assert token_string([0xD800, 65])[0] != "\ud800"  # surrogates are shifted out of the way


def test_cjk_loop_counts_characters_not_bytes():
    unit = "直到达到最大长度"
    result = detect("我们在这里讨论文本退化的问题" + unit * 12 + unit[:3], finish_reason="length")
    assert result.verdict == "degenerate" and result.unit == unit


def test_compression_ratio_matches_whisper():
    text = "  hello hello hello world  "
    data = text.strip().encode("utf-8")
    assert compression_ratio(text) == len(data) / len(zlib.compress(data))
    assert compression_ratio("   ") == 0.0


def test_clean_long_prose_is_not_flagged_by_its_compression_ratio():
    # Whisper's fixed 2.4 would flag this: 16 KB of clean prose compresses past it.
    passages = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"
    prose = " ".join(json.loads(line)["text"] for line in passages.open())[:16000]
    assert compression_ratio(prose) > 2.4
    assert detect(prose, finish_reason="stop").verdict == "clean"


def test_rep_n_by_hand():
    assert rep_n("a b c d".split(), 2) == 0.0
    assert rep_n("a b a b a b".split(), 2) == pytest.approx(1 - 2 / 5)
    assert rep_n(["a"], 4) == 0.0


ADVERSARIAL = {
    "one_char": (lambda: "a" * 10**6, "degenerate"),
    "short_unit": (lambda: "abc " * 250_000, "degenerate"),
    "random": (lambda: "".join(random.Random(0).choices("abcdefgh ij\n", k=10**6)), "clean"),
    "one_huge_loop": (lambda: PASSAGE * 4000, "degenerate"),
}


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_megabyte_inputs_are_judged(name):
    # Timings live in bench/detect.py; here: the right answer on 1 MB without blowing up.
    make, expected = ADVERSARIAL[name]
    assert detect(make(), finish_reason="length").verdict == expected


def test_empty_and_tiny_texts():
    for text in ("", " ", "a", "ab"):
        assert detect(text, finish_reason="stop").verdict == "clean"


def _tail_ratio_compressed_context(text: str, fraction: float = 0.25, context: int = 2048) -> float:
    """The textbook form of tail_cr: compress the context, sync-flush, count what the tail costs."""
    data = text.encode("utf-8")
    cut = int(len(data) * (1 - fraction))
    tail = data[cut:]
    if not tail:
        return 0.0
    comp = zlib.compressobj(6, zlib.DEFLATED, -12, 4)
    comp.compress(data[max(0, cut - context) : cut])
    comp.flush(zlib.Z_SYNC_FLUSH)
    return len(tail) / max(len(comp.compress(tail)) + len(comp.flush()), 1)


def test_tail_compression_with_a_preset_dictionary_costs_what_compressing_the_context_does():
    from dpominer.periodicity import tail_compression_ratio

    rng = random.Random(3)
    texts = ["", "a", "ab", "a" * 5000, PASSAGE, PASSAGE * 40, "东京" * 900 + PASSAGE]
    for _ in range(300):
        alphabet = rng.choice(["ab", "abcdefgh ij\n", "0123456789 ", "é東 x\u3000", PASSAGE])
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 12000)))
        if rng.random() < 0.5:  # a loop in the tail, cut mid-unit
            text += (text[-rng.randrange(1, 300):] * 60)[: rng.randrange(0, 6000)]
        texts.append(text)
    for text in texts:
        assert tail_compression_ratio(text, 0.25) == _tail_ratio_compressed_context(text), text[:80]


def _tail_loop_by_divisibility(s: str, cfg: DetectorConfig, cut_off: bool = False):
    """find_tail_loop as first written: a unit is skipped when a verified unit divides it and its span
    holds it (a scan of every verified unit)."""
    from dpominer.periodicity import TailLoop, _periodic_extent, is_loop

    end = len(s)
    if end < 2:
        return None
    probe_len = max(1, min(8, end // 2))
    probe = s[end - probe_len :]
    lo = max(0, end - probe_len - cfg.max_unit_chars, end - cfg.window_chars)
    verified, best, best_key = [], None, (False, 0.0)
    j = s.rfind(probe, lo, end - 1)
    while j != -1:
        p = end - probe_len - j
        if not any(p % q == 0 and p <= span for q, span in verified):
            span = p + _periodic_extent(s, end, p, probe_len)
            verified.append((p, span))
            loop = TailLoop(unit_len=p, span=span, start=end - span, copies=span / p)
            qualifies = is_loop(loop, cfg, cut_off)
            key = (qualifies, float(span) if qualifies else loop.copies / copies_needed(p, cfg, cut_off))
            if key > best_key:
                best, best_key = loop, key
        j = s.rfind(probe, lo, j + probe_len - 1)
    return best


def test_tail_loop_skips_the_same_unit_multiples_as_a_divisibility_scan():
    rng = random.Random(5)
    texts = ["=" * 70 + " " + "=" * 29 + " " + "=" * 40, "ab" * 700, "a" * 3000, "abcabd" * 300]
    for _ in range(400):
        unit = "".join(rng.choices("ab =-\n", k=rng.randrange(1, 60)))
        body = "".join(rng.choices("ab =\n", k=rng.randrange(0, 2000)))
        texts.append(body + (unit * rng.randrange(1, 200))[: rng.randrange(1, 3000)])
    for text in texts:
        for cut_off in (False, True):
            assert find_tail_loop(text, CFG, cut_off=cut_off) == _tail_loop_by_divisibility(text, CFG, cut_off)


def test_spaces_before_a_ragged_cut_off_end_are_indentation_not_a_loop():
    text = PASSAGE[:900] + "\n" + " " * 60 + "units moonshail amusing bill of ments el Chrome custom"
    result = detect(text, finish_reason="length")
    assert result.verdict == "clean", result.why
    # the same spaces running to the very end, cut off there, are a loop
    assert detect(PASSAGE[:900] + "\n" + " " * 120, finish_reason="length").verdict == "degenerate"
