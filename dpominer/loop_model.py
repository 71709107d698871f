"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math

FEATURES = ("cut_off", "tail_copies", "norm_copies", "norm_letters", "norm_numbers", "rep_tail", "log_tail_cr",
            "item_copies", "dup_share", "dup_folded", "sentence_share", "near_share", "word_copies", "log_cr_ratio",
            "ref_repeats", "logprob_tail", "has_logprobs")

# Fitted: see fitted_on.
MODEL: dict = {
    "intercept": -5.8488,
    "weights": {
        "cut_off": 1.3647,
        "tail_copies": 2.1502,
        "norm_copies": 0.9574,
        "norm_letters": -0.3915,
        "norm_numbers": -0.7745,
        "rep_tail": 4.1466,
        "log_tail_cr": 1.1588,
        "item_copies": 1.2842,
        "dup_share": 10.584,
        "dup_folded": 6.3182,
        "sentence_share": 1.5347,
        "near_share": 1.5083,
        "word_copies": 3.7751,
        "log_cr_ratio": 0.758,
        "ref_repeats": -1.1126,
        "logprob_tail": 0.4518,
        "has_logprobs": 1.7862
    },
    "fitted_on": {
        "by": "bench/fit_detector.py",
        "l2": 1.0,
        "tuning_rows": 1088,
        "loops": 410,
        "left_open_by_rules": 89,
        "leave_one_out_decided": 65,
        "leave_one_out_right": 56
    }
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
