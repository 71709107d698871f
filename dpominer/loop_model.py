"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math

FEATURES = ("cut_off", "tail_copies", "norm_copies", "norm_letters", "norm_numbers", "rep_tail", "log_tail_cr",
            "item_copies", "dup_share", "sentence_share", "near_share", "word_copies", "log_cr_ratio", "ref_repeats",
            "logprob_tail", "has_logprobs")

# Fitted: see fitted_on.
MODEL: dict = {
    "intercept": -5.5809,
    "weights": {
        "cut_off": 1.5298,
        "tail_copies": 1.3781,
        "norm_copies": 1.9669,
        "norm_letters": -1.1021,
        "norm_numbers": 0.0664,
        "rep_tail": 3.2783,
        "log_tail_cr": 1.2432,
        "item_copies": -1.2754,
        "dup_share": 10.8735,
        "sentence_share": -0.155,
        "near_share": 1.9661,
        "word_copies": 1.7463,
        "log_cr_ratio": 0.7751,
        "ref_repeats": -1.2802,
        "logprob_tail": 0.6109,
        "has_logprobs": 0.3672
    },
    "fitted_on": {
        "by": "bench/fit_detector.py",
        "l2": 1.0,
        "tuning_rows": 314,
        "loops": 135,
        "left_open_by_rules": 25,
        "leave_one_out_decided": 21,
        "leave_one_out_right": 17
    }
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
