"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math

FEATURES = ("cut_off", "tail_copies", "norm_copies", "norm_letters", "norm_numbers", "rep_tail", "log_tail_cr",
            "item_copies", "dup_share", "sentence_share", "word_copies", "log_cr_ratio", "logprob_tail",
            "has_logprobs")

# Fitted: see fitted_on.
MODEL: dict = {
    "intercept": -4.8682,
    "weights": {
        "cut_off": 2.1546,
        "tail_copies": 1.2787,
        "norm_copies": 0.7522,
        "norm_letters": -1.1348,
        "norm_numbers": 0.5971,
        "rep_tail": 3.2605,
        "log_tail_cr": 0.7866,
        "item_copies": 0.2247,
        "dup_share": 5.1402,
        "sentence_share": 2.3293,
        "word_copies": 1.4938,
        "log_cr_ratio": 0.6779,
        "logprob_tail": 1.1646,
        "has_logprobs": -0.2482
    },
    "fitted_on": {
        "by": "bench/fit_detector.py",
        "l2": 1.0,
        "tuning_rows": 131,
        "loops": 64,
        "left_open_by_rules": 5,
        "leave_one_out_decided": 4,
        "leave_one_out_right": 4
    }
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
