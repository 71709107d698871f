"""The calibrated part of the loop detector: a logistic model over its weak signals, for the cases
the rules leave open (some repetition, no clear loop). Coefficients are plain data, fitted by
``bench/fit_detector.py`` on the tuning part of the labelled sets (never on the held-out part) and
pasted here; the fit's data, sizes and cross-validated score are recorded beside them."""

from __future__ import annotations

import math

FEATURES = ("cut_off", "tail_copies", "norm_copies", "rep_tail", "log_tail_cr", "item_copies", "dup_share",
            "sentence_share", "word_copies", "log_cr_ratio", "logprob_tail", "has_logprobs")

# Before the first fit: no opinion (p = 0.5), so every weak case stays `suspect`, as before the model.
MODEL: dict = {
    "intercept": 0.0,
    "weights": {},
    "fitted_on": "not fitted",
}


def loop_probability(x: dict[str, float], model: dict | None = None) -> float:
    """P(loop) = σ(intercept + Σ wᵢ·xᵢ)."""
    model = model or MODEL
    z = model["intercept"] + sum(w * x.get(name, 0.0) for name, w in model["weights"].items())
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
