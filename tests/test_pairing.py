from __future__ import annotations

from conftest import LOOP, PASSAGE, candidate_record

from dpominer.pairing import PairConfig, make_pairs
from dpominer.records import CandidateRecord
from dpominer.scoring import ScoreConfig, score_record

NEAR = PASSAGE.replace("bytes", "bites", 1)
WORSE = PASSAGE[: len(PASSAGE) // 2]  # clean but half missing, stopped on its own: an omission (CER ≈ 0.5)
GARBLED = PASSAGE.replace("bytes", "byte sequences")  # coverage 41/44, CER 27/242 ≈ 0.11
OTHER_LOOP = PASSAGE[:30] + " and the return value will be bytes," * 15


def scored(texts, reference=PASSAGE, messages=False) -> CandidateRecord:
    record = CandidateRecord.model_validate(candidate_record("doc", texts, reference, messages))
    return score_record(record, ScoreConfig())


def pairs(record, **policy):
    return make_pairs(record, PairConfig(**policy))


def test_best_clean_candidate_is_chosen_against_the_loop():
    out = pairs(scored([(NEAR, "stop"), (LOOP, "length"), (PASSAGE, "stop")]))
    assert out.no_pair_reason is None
    [pair] = out.pairs
    assert (pair.chosen, pair.rejected) == (PASSAGE, LOOP)  # exact copy (CER 0) beats the near one
    assert (pair.reason, pair.chosen_source, pair.chosen_index, pair.rejected_index) == (
        "rejected_degenerate", "candidate", 2, 1)
    assert pair.rejected_scores.verdict == "degenerate" and pair.rejected_scores.start_char == 60
    assert pair.chosen_scores.cer == 0.0 and pair.prompt == "Transcribe: " + PASSAGE


def test_reference_is_chosen_when_no_candidate_is_clean_and_good_enough():
    record = scored([(LOOP, "length"), (WORSE, "stop")])
    [first, second] = pairs(record).pairs
    assert first.chosen_source == "reference" and first.chosen == PASSAGE
    assert [first.reason, second.reason] == ["rejected_degenerate", "rejected_omission"]
    none = pairs(record, chosen_from="candidates")
    assert (none.pairs, none.no_pair_reason) == ([], "no_clean_candidate")  # an omission is never chosen
    assert pairs(record, max_chosen_cer=0.6, chosen_from="candidates").no_pair_reason == "no_clean_candidate"
    garbled = scored([(LOOP, "length"), (GARBLED, "stop")])
    assert pairs(garbled, chosen_from="candidates").no_pair_reason == "no_clean_candidate_good_enough"
    assert pairs(garbled, max_chosen_cer=0.2, chosen_from="candidates").pairs[0].chosen == GARBLED


def test_chosen_from_reference_always_uses_it():
    [pair] = pairs(scored([(PASSAGE, "stop"), (LOOP, "length")]), chosen_from="reference").pairs
    assert pair.chosen_source == "reference" and pair.chosen_index is None


def test_no_rejected_when_all_candidates_are_clean_and_close():
    out = pairs(scored([(PASSAGE, "stop"), (NEAR, "stop")]))
    assert (out.pairs, out.no_pair_reason) == ([], "no_rejected")


def test_worse_fidelity_needs_the_margin():
    record = scored([(PASSAGE, "stop"), (GARBLED, "stop")])
    assert pairs(record).pairs[0].reason == "rejected_worse_fidelity"
    assert pairs(record, min_margin=0.9).no_pair_reason == "no_rejected"
    assert pairs(record, reject_worse=False).no_pair_reason == "no_rejected"


def test_most_severe_first_near_duplicates_collapse_and_cap():
    texts = [(PASSAGE, "stop"), (OTHER_LOOP, "length"), (LOOP, "length"), (LOOP + " or if", "length"), (WORSE, "stop")]
    record = scored(texts)
    out = pairs(record)
    severities = [p.rejected_scores.severity for p in out.pairs if p.reason == "rejected_degenerate"]
    assert severities == sorted(severities, reverse=True)
    assert sorted(p.rejected_index for p in out.pairs) == [1, 2, 4]  # 3 is a near-copy of 2
    assert len(pairs(record, dedup_threshold=100).pairs) == 4
    assert [p.rejected_index for p in pairs(record, max_pairs_per_doc=1).pairs] == [out.pairs[0].rejected_index]


def test_conversational_input_gives_conversational_pairs():
    [pair] = pairs(scored([(PASSAGE, "stop"), (LOOP, "length")], messages=True)).pairs
    pair = pair.model_dump()  # as written to the file
    assert pair["prompt"] == [{"role": "user", "content": "Transcribe: " + PASSAGE}]
    assert pair["chosen"] == [{"role": "assistant", "content": PASSAGE}]
    assert pair["rejected"] == [{"role": "assistant", "content": LOOP}]


def test_without_reference_a_clean_candidate_that_stopped_is_chosen():
    record = scored([(PASSAGE[:100], "length"), (LOOP, "length"), (PASSAGE, "stop")], reference=None)
    [pair] = pairs(record).pairs
    assert pair.chosen_index == 2 and pair.reason == "rejected_degenerate"
    only_loops = scored([(LOOP, "length")], reference=None)
    assert pairs(only_loops).no_pair_reason == "no_clean_candidate"
    assert pairs(only_loops, chosen_from="reference").no_pair_reason == "no_reference"


def test_suspect_candidates_are_never_chosen():
    # The detector decides most cases now (a counter loop that stopped is degenerate), so the
    # undecided verdict is set by hand: what is tested is pairing's handling of it.
    record = scored([(PASSAGE + " It may loop, it may not.", "stop"), (LOOP, "length")], reference=None)
    undecided = record.candidates[0].degeneration.model_copy(update={"verdict": "suspect"})
    record.candidates[0].degeneration = undecided
    assert pairs(record).no_pair_reason == "no_clean_candidate"


def test_an_early_stop_is_rejected_as_omission_never_chosen():
    record = scored([(WORSE, "stop"), (PASSAGE, "stop")])
    assert record.candidates[0].omission.verdict == "omission"
    [pair] = pairs(record, reject_worse=False).pairs  # rejected on omission even without --reject-worse
    assert (pair.reason, pair.chosen, pair.rejected) == ("rejected_omission", PASSAGE, WORSE)
    assert pair.rejected_scores.omission["verdict"] == "omission"
    assert pair.rejected_scores.fidelity["coverage"] < 0.8
    assert pairs(record, reject_worse=False, reject_omission=False).no_pair_reason == "no_rejected"
    # only omissions and loops: the reference is chosen, never the early stop
    only = pairs(scored([(WORSE, "stop"), (LOOP, "length")]))
    assert {p.chosen_source for p in only.pairs} == {"reference"}
    # cut at max_tokens after half the words: not an omission, so not rejected as one
    cut = scored([(WORSE, "length"), (PASSAGE, "stop")])
    assert cut.candidates[0].omission.verdict == "cut"
    assert pairs(cut, reject_worse=False).no_pair_reason == "no_rejected"


def test_loops_and_omissions_take_turns_under_the_cap():
    early = PASSAGE[: len(PASSAGE) // 3]
    record = scored([(LOOP, "length"), (OTHER_LOOP, "length"), (WORSE, "stop"), (early, "stop")])
    got = [p.reason for p in pairs(record, max_pairs_per_doc=2).pairs]
    assert got == ["rejected_degenerate", "rejected_omission"]  # not the two loops
    four = pairs(record, max_pairs_per_doc=4).pairs
    assert [p.reason for p in four] == ["rejected_degenerate", "rejected_omission"] * 2
    assert four[1].rejected == early  # lowest coverage first


def test_pair_summary_reports_the_length_ratio():
    from dpominer.records import Pair
    from dpominer.scoring import PairLengths

    lengths = PairLengths()
    for chosen, rejected, reason in (("a" * 100, "b" * 400, "rejected_degenerate"),
                                     ("a" * 100, "b" * 25, "rejected_omission")):
        lengths.add(Pair(prompt="p", chosen=chosen, rejected=rejected, id="d", reason=reason,
                         chosen_source="reference", rejected_index=0))
    got = lengths.as_dict()
    # by hand: 200 chosen chars / 425 rejected = 0.4706; per-pair ratios 1/4 and 4 → geometric mean 1
    assert got["chosen_rejected_ratio"] == 0.4706 and got["chosen_rejected_ratio_geomean"] == 1.0
    assert got["rejected_longer_share"] == 0.5
    assert got["rejected_longer_share_by_reason"] == {"rejected_degenerate": 1.0, "rejected_omission": 0.0}


def test_without_reference_the_judges_completeness_rejects_an_early_stop():
    from dpominer.scoring import judge_record_omissions

    record = scored([(PASSAGE, "stop"), (WORSE, "stop"), (LOOP, "length")], reference=None)
    judged = {0: (0.9, 9), 1: (0.85, 2)}  # the early stop scores well overall but 2/10 on completeness
    for cand in record.candidates[:2]:
        score, completeness = judged[cand.index]
        cand.judge = {"score": score, "criteria": {"completeness": completeness, "faithfulness": 10}}
    judge_record_omissions(record, 10, ScoreConfig())
    assert [c.omission.verdict if c.omission else None for c in record.candidates] == ["complete", "omission", None]
    out = pairs(record, score_by="judge")
    assert [(p.chosen_index, p.rejected_index, p.reason) for p in out.pairs] == [
        (0, 2, "rejected_degenerate"), (0, 1, "rejected_omission")]


def _row_cases():
    """Records of every shape `pair` meets: prompt or messages (extras, text parts), token ids and a
    rendered prompt, judge scores, failed checks, the reference chosen, no reference, odd extras."""
    from dpominer.checks import parse_specs

    texts = [(NEAR, "stop"), (LOOP, "length"), (PASSAGE, "stop"), (WORSE, "stop"), (OTHER_LOOP, "length")]
    yield scored(texts)
    yield scored(texts, messages=True)
    yield scored([(LOOP, "length"), (WORSE, "stop"), (GARBLED, "stop")])  # the reference is chosen
    chat = candidate_record("chat", texts, PASSAGE, messages=True)
    chat["messages"] = [{"role": "system", "content": "Be exact.", "name": None, "meta": {"a": None, "b": [1]}},
                        {"role": "user", "content": [{"type": "text", "text": "Transcribe: "},
                                                     {"type": "text", "text": PASSAGE, "cache": None}]}]
    chat["rendered_prompt"] = "<|user|>Transcribe"
    for i, cand in enumerate(chat["candidates"]):
        cand |= {"token_ids": [i, 7, 7, 9], "seed": i, "extra": {"x": None}}
    yield score_record(CandidateRecord.model_validate(chat), ScoreConfig())
    checked = CandidateRecord.model_validate(candidate_record("chk", texts + [(PASSAGE + " TODO", "stop")]))
    yield score_record(checked, ScoreConfig(checks=parse_specs(["regex-forbid:TODO"])))
    judged = scored(texts, reference=None)
    for cand in judged.candidates:
        cand.judge = {"score": 0.9 - 0.2 * cand.index, "criteria": None if cand.index else {"completeness": 8}}
    yield judged
    odd = scored(texts)
    odd.candidates[2].fidelity, odd.candidates[3].fidelity = {}, {}  # empty: copied as the candidate's field
    yield odd


def test_pair_rows_are_the_pairs_as_the_model_writes_them():
    """`pair` writes rows built without validating again: byte for byte, key order included, what
    ``Pair.model_dump(exclude_none=True)`` of :func:`make_pairs`'s pairs gives."""
    import orjson

    from dpominer.pairing import pair_rows

    seen = 0
    for record in _row_cases():
        for policy in ({}, {"chosen_from": "reference"}, {"score_by": "judge"}, {"max_pairs_per_doc": 10}):
            cfg = PairConfig(**policy)
            rows, why = pair_rows(record, cfg)
            outcome = make_pairs(record, cfg)
            assert why == outcome.no_pair_reason
            assert [orjson.dumps(row) for row in rows] == [
                orjson.dumps(pair.model_dump(exclude_none=True)) for pair in outcome.pairs]
            seen += len(rows)
    assert seen > 30


def test_a_repeated_candidate_scores_as_if_alone():
    """A candidate equal to an earlier one of its document reuses its scores (a copy, not the object);
    one differing only in finish reason or token ids is scored on its own."""
    texts = [(LOOP, "length"), (PASSAGE, "stop"), (LOOP, "length"), (LOOP, "stop"), (PASSAGE, "stop")]
    record = CandidateRecord.model_validate(candidate_record("doc", texts, PASSAGE))
    record.candidates[4].token_ids = [1, 2, 3]
    together = score_record(record, ScoreConfig())
    for cand in together.candidates:
        alone = CandidateRecord.model_validate(candidate_record("doc", [(cand.text, cand.finish_reason)], PASSAGE))
        alone.candidates[0].token_ids = cand.token_ids
        expected = score_record(alone, ScoreConfig()).candidates[0]
        assert cand.model_dump(exclude={"index"}) == expected.model_dump(exclude={"index"})
    first, again = together.candidates[0], together.candidates[2]
    assert again.degeneration is not first.degeneration and again.fidelity is not first.fidelity
    assert together.candidates[3].degeneration.verdict != first.degeneration.verdict or \
        together.candidates[3].degeneration.why != first.degeneration.why  # stopped, not cut off: its own verdict
