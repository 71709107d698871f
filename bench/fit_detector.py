"""Fit the detector's logistic model (dpominer/loop_model.py) on the *tuning* rows of the labelled sets.

    python bench/fit_detector.py            # fit, print the coefficients and leave-one-out numbers
    python bench/fit_detector.py --write    # and write them into dpominer/loop_model.py

The model decides only the candidates the rules leave open (kind weak_repetition), and those are few
(most outputs are decided by a rule), so it is fitted on every labelled tuning candidate ("ambiguous"
ones left out) — the same bounded features, a wider spread of them — and its leave-one-out verdicts are
reported on the open ones, where it is used. Held-out rows are never read here. L2-regularised
logistic regression by Newton's method (IRLS), features standardised only inside the fit and the
weights mapped back, so the stored coefficients apply to the raw features.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from calibrate import tuning_rows  # noqa: E402

from dpominer import loop_model  # noqa: E402
from dpominer.degeneration import DEFAULT_DETECTOR, compute_signals, detect  # noqa: E402
from dpominer.loop_model import features  # noqa: E402

OPEN = {"intercept": 0.0, "weights": {}, "fitted_on": "open"}  # p = 0.5: every weak case lands in the band


def model_rows(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Features and labels of every labelled row, and which rows the rules leave open."""
    xs, ys, ids, open_rows = [], [], [], []
    original = loop_model.MODEL
    loop_model.MODEL = OPEN  # see which rows the rules leave to the model
    try:
        for row in rows:
            if row["label"] == "ambiguous":
                continue
            cut_off = row.get("finish_reason") in ("length", "repetition")
            verdict = detect(row["text"], token_ids=row.get("token_ids"), finish_reason=row.get("finish_reason"),
                             reference=row.get("reference"), token_logprobs=row.get("token_logprobs"))
            sig = compute_signals(row["text"], DEFAULT_DETECTOR, row.get("token_ids"), cut_off, row.get("reference"),
                                  row.get("token_logprobs"))
            feats = features(sig, DEFAULT_DETECTOR, cut_off)
            xs.append([feats[name] for name in loop_model.FEATURES])
            ys.append(float(row["label"] == "degenerate"))
            ids.append(row["id"])
            open_rows.append(verdict.kind == "weak_repetition")
    finally:
        loop_model.MODEL = original
    return np.array(xs), np.array(ys), ids, np.array(open_rows)


def fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    w = np.zeros(z.shape[1])
    penalty = np.eye(len(w)) * l2
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    for _ in range(50):
        p = 1 / (1 + np.exp(-z @ w))
        grad = z.T @ (p - y) + penalty @ w
        hess = z.T @ (z * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = w[1:] / std
    return float(w[0] - (weights * mean).sum()), weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = tuning_rows()
    x, y, ids, open_rows = model_rows(rows)
    print(f"{len(y)} labelled tuning candidates ({int(y.sum())} loops); the rules leave {open_rows.sum()} open")
    intercept, weights = fit(x, y, args.l2)
    loo = []
    for i in np.where(open_rows)[0]:
        keep = np.arange(len(y)) != i
        b, w = fit(x[keep], y[keep], args.l2)
        loo.append(1 / (1 + np.exp(-(b + x[i] @ w))))
    loo, y_open = np.array(loo), y[open_rows]
    low, high = DEFAULT_DETECTOR.suspect_band
    decided = (loo < low) | (loo >= high)
    correct = ((loo >= high) == (y_open == 1)) & decided
    print(f"leave-one-out on the open ones: {decided.sum()} of {len(loo)} decided, {correct.sum()} of them right; "
          f"{(~decided).sum()} left suspect")
    open_ids = [i for i, o in zip(ids, open_rows, strict=True) if o]
    for k in range(len(loo)):
        print(f"    {open_ids[k]:28} label {'loop ' if y_open[k] else 'clean'} p={loo[k]:.2f}")
    model = {"intercept": round(intercept, 4),
             "weights": {name: round(float(w), 4) for name, w in zip(loop_model.FEATURES, weights, strict=True)},
             "fitted_on": {"by": "bench/fit_detector.py", "l2": args.l2, "tuning_rows": len(y),
                           "loops": int(y.sum()), "left_open_by_rules": len(loo),
                           "leave_one_out_decided": int(decided.sum()), "leave_one_out_right": int(correct.sum())}}
    literal = "MODEL: dict = " + json.dumps(model, indent=4, ensure_ascii=False) + "\n"
    print(literal)
    if args.write:
        path = ROOT / "dpominer" / "loop_model.py"
        source = path.read_text()
        source = re.sub(r"(# .*\n)?MODEL: dict = \{.*?\n\}\n", "# Fitted: see fitted_on.\n" + literal, source,
                        count=1, flags=re.S)
        path.write_text(source)
        print(f"written to {path}")


if __name__ == "__main__":
    main()
