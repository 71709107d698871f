"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .periodicity import TailLoop, copies_needed

if TYPE_CHECKING:
    from .degeneration import DetectorConfig, Signals

FEATURES = ("cut_off", "tail_copies", "norm_copies", "norm_letters", "norm_numbers", "rep_tail", "log_tail_cr",
            "item_copies", "dup_share", "dup_folded", "sentence_share", "near_share", "word_copies", "log_cr_ratio",
            "ref_repeats", "logprob_tail", "has_logprobs")

# Fitted: see fitted_on.
MODEL: dict = {
    "intercept": -5.8682,
    "weights": {
        "cut_off": 1.3719,
        "tail_copies": 2.1403,
        "norm_copies": 0.9825,
        "norm_letters": -0.3651,
        "norm_numbers": -0.7828,
        "rep_tail": 4.1331,
        "log_tail_cr": 1.1514,
        "item_copies": 1.3753,
        "dup_share": 10.5496,
        "dup_folded": 6.3602,
        "sentence_share": 1.4527,
        "near_share": 1.5571,
        "word_copies": 4.3929,
        "log_cr_ratio": 0.8642,
        "ref_repeats": -1.252,
        "logprob_tail": 0.4063,
        "has_logprobs": 1.7543
    },
    "fitted_on": {
        "by": "bench/fit_detector.py",
        "l2": 1.0,
        "tuning_rows": 1088,
        "loops": 410,
        "left_open_by_rules": 88,
        "leave_one_out_decided": 65,
        "leave_one_out_right": 56
    }
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def features(sig: Signals, cfg: DetectorConfig, cut_off: bool) -> dict[str, float]:
    """The model's inputs, each bounded so no one signal runs away."""

    def copies_ratio(loop: TailLoop | None) -> float:
        if loop is None or loop.span < cfg.min_span_chars:
            return 0.0
        return min(2.0, loop.copies / copies_needed(loop.unit_len, cfg, cut_off))

    items, sent = sig.items, sig.sentences
    norm_copies = copies_ratio(sig.tail_norm)
    norm_unit = sig.tail_norm.norm_unit if sig.tail_norm is not None else ""
    count, word = sig.word_run
    lp_tail = sig.logprobs[0] if sig.logprobs is not None else 0.0
    return {
        "cut_off": float(cut_off),
        "tail_copies": copies_ratio(sig.tail),
        "norm_copies": norm_copies,
        # what the counter loop's unit holds: words (a stuck item) or only numbers (counting), and how
        # many numbers move per copy (one: a counter; more: a table or a plan)
        "norm_letters": min(1.0, sum(c.isalpha() for c in norm_unit) / 8) if norm_copies else 0.0,
        "norm_numbers": min(3.0, float(norm_unit.count("0"))) if norm_copies else 0.0,
        "rep_tail": sig.rep_tail,
        "log_tail_cr": math.log(sig.tail_cr) if sig.tail_cr > 1 else 0.0,
        "item_copies": min(2.0, items.run.copies / cfg.item_copies) if items and items.run else 0.0,
        "dup_share": items.dup_share if items else 0.0,
        # what folding the numbers adds: lines that come round again with other numbers
        "dup_folded": max(0.0, items.dup_folded - items.dup_share) if items and items.worded >= cfg.dup_items else 0.0,
        # sentences said again word for word (up to a counter): a checklist swaps a word in every line
        # but never says the same thing twice
        "sentence_share": sent.exact / sent.sentences if sent and sent.sentences else 0.0,
        # sentences close to an earlier one, insertions and deletions included
        "near_share": sent.near / sent.sentences if sent and sent.sentences else 0.0,
        "word_copies": min(2.0, count / copies_needed(len(word) + 1, cfg)) if word and count > 1 else 0.0,
        "log_cr_ratio": math.log(sig.cr / sig.cr_ref) if sig.cr_ref and sig.cr > 0 else 0.0,
        # how much of the candidate's repetition the reference has too (1: all of it; 0: none, or no reference)
        "ref_repeats": min(1.0, sig.rep_ref / sig.rep_tail) if sig.rep_ref is not None and sig.rep_tail > 0 else 0.0,
        "logprob_tail": max(-5.0, lp_tail),
        "has_logprobs": float(sig.logprobs is not None),
    }
