from __future__ import annotations

import pytest

from dpominer.mining import ScoreConfig, score_record
from dpominer.omission import OmissionConfig, judge_omission, judged_omission
from dpominer.records import CandidateRecord

REF = " ".join(f"w{i}" for i in range(20))  # 20 words


def _record(*cands):
    return CandidateRecord.model_validate({
        "id": "d", "prompt": "copy:", "reference": REF,
        "candidates": [{"index": i, "text": t, "finish_reason": f} for i, (t, f) in enumerate(cands)]})


def test_the_rule_keeps_loops_and_cuts_apart_from_omission():
    cfg = OmissionConfig(min_coverage=0.8)
    assert judge_omission(0.8, "stop", False, cfg).verdict == "complete"  # the threshold itself is complete
    om = judge_omission(0.31, "stop", False, cfg)
    assert (om.verdict, om.why) == ("omission", "stopped on its own after 31% of the reference's words")
    assert judge_omission(0.31, None, False, cfg).verdict == "omission"  # unknown ending: it ended
    cut = judge_omission(0.31, "length", False, cfg)
    assert (cut.verdict, cut.why) == ("cut", "cut off at max_tokens after 31% of the reference's words")
    loop = judge_omission(0.31, "stop", True, cfg)  # a loop is degeneration, even when it then stopped
    assert loop.verdict == "cut" and "loop" in loop.why and "31%" in loop.why
    assert judge_omission(0.31, "repetition", False, cfg).verdict == "cut"
    assert judge_omission(0.95, "length", True, cfg).verdict == "complete"  # all words there, then a loop


def test_score_gives_every_candidate_coverage_and_a_verdict():
    first_six = " ".join(REF.split()[:6])
    loop = first_six + " " + " ".join(["w5 w6 w7"] * 40)
    record = score_record(_record((REF, "stop"), (first_six, "stop"), (loop, "length"),
                                  (REF.replace("w3 ", ""), "stop")), ScoreConfig())
    got = [(c.omission.verdict, c.fidelity["coverage"]) for c in record.candidates]
    assert got == [("complete", 1.0), ("omission", 0.3), ("cut", pytest.approx(0.4)), ("complete", 0.95)]
    assert record.candidates[2].degeneration.verdict == "degenerate"
    assert record.candidates[1].omission.why == ("stopped on its own after 30% of the reference's words (it wrote "
                                                 "30% as many words as the reference)")
    assert record.candidates[1].omission.length_ratio == 0.3


def test_a_rewrite_is_an_omission_that_says_so():
    rewrite = " ".join(f"x{i}" for i in range(12)) + " " + " ".join(REF.split()[:8])  # 20 words, 8 of the reference
    om = score_record(_record((rewrite, "stop")), ScoreConfig()).candidates[0].omission
    assert (om.verdict, om.coverage, om.length_ratio) == ("omission", 0.4, 1.0)
    assert "more a rewrite than an early stop" in om.why


def test_threshold_is_a_setting():
    record = score_record(_record((" ".join(REF.split()[:17]), "stop")),
                          ScoreConfig(omission=OmissionConfig(min_coverage=0.9)))
    assert record.candidates[0].omission.verdict == "omission"  # 17/20 = 0.85 < 0.9


def test_without_reference_the_judges_completeness_decides():
    judge = {"score": 0.5, "criteria": {"completeness": 3, "faithfulness": 9}}
    om = judged_omission(judge, 10, "stop", False)
    assert om.verdict == "omission" and om.coverage is None and om.source == "judge"
    assert om.completeness == pytest.approx(2 / 9, abs=1e-4)  # (3 − 1) / (10 − 1)
    assert judged_omission(judge, 10, "length", False).verdict == "cut"
    judge["criteria"]["completeness"] = 6  # (6 − 1) / 9 = 0.56 ≥ 0.5
    assert judged_omission(judge, 10, "stop", False).verdict == "complete"
    assert judged_omission({"score": 0.5, "criteria": {"faithfulness": 9}}, 10, "stop", False) is None
    assert judged_omission({"error": "unparseable"}, 10, "stop", False) is None
