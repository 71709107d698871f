"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math

FEATURES = ("cut_off", "tail_copies", "norm_copies", "norm_letters", "norm_numbers", "rep_tail", "log_tail_cr",
            "item_copies", "dup_share", "sentence_share", "word_copies", "log_cr_ratio", "ref_repeats", "logprob_tail",
            "has_logprobs")

# Fitted: see fitted_on.
MODEL: dict = {
    "intercept": -5.5141,
    "weights": {
        "cut_off": 1.9597,
        "tail_copies": 1.4747,
        "norm_copies": 2.3657,
        "norm_letters": -1.3734,
        "norm_numbers": 0.5658,
        "rep_tail": 3.5777,
        "log_tail_cr": 0.9904,
        "item_copies": 0.3435,
        "dup_share": 6.3883,
        "sentence_share": -0.5403,
        "word_copies": 1.6349,
        "log_cr_ratio": 0.8799,
        "ref_repeats": -0.298,
        "logprob_tail": 0.5099,
        "has_logprobs": -0.2144
    },
    "fitted_on": {
        "by": "bench/fit_detector.py",
        "l2": 1.0,
        "tuning_rows": 195,
        "loops": 76,
        "left_open_by_rules": 10,
        "leave_one_out_decided": 8,
        "leave_one_out_right": 7
    }
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
