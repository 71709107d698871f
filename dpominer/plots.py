"""The report's plots: matplotlib (Agg), one function per plot, each drawing from the records it is given
and returning how many data points it drew, so the page leaves out a plot with no data.

Evaluations and training metrics are the JSON that `eval` and `train` write (plain dicts); pairs and
candidates come typed (:class:`~dpominer.records.Pair`, :class:`~dpominer.records.Candidate`).
"""

from __future__ import annotations

import io
from typing import Any

from .records import Candidate, Message, Pair

Evals = list[tuple[str, dict[str, Any]]]  # (label, eval.json)


def figure(draw, rows: int = 1, cols: int = 1) -> tuple[bytes, int]:
    """``draw(axes)`` on a fresh figure: (the PNG, the points it drew)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    points = draw(axes.flatten() if rows * cols > 1 else axes[0][0])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue(), points


def completion_text(value: str | list[Message]) -> str:
    """A pair side's text: the string, or its last message's text parts."""
    return value if isinstance(value, str) else value[-1].text


def degeneration(ax, evals: Evals) -> int:
    labels, rates, lows, highs = [], [], [], []
    for _, data in evals:
        for row in data["models"]:
            lo, hi = row["degeneration_ci95"]
            rate = row["degeneration_rate"]
            labels.append(row["label"])
            rates.append(rate)
            lows.append(max(0.0, rate - lo))  # an eval.json with rounding noise (2.8e-17 at k=0) still plots
            highs.append(max(0.0, hi - rate))
    if labels:
        ax.bar(labels, rates, yerr=[lows, highs], capsize=6, color="#4c72b0")
        ax.set_ylabel("degenerate candidates (95 % CI)")
        ax.set_title("Degeneration rate per model")
    return len(labels)


def checks(ax, evals: Evals) -> int:
    """Grouped bars: per check (and degeneration, for scale), one bar per model, with 95 % intervals."""
    models = [row for _, data in evals for row in data["models"] if row.get("checks")]
    names = list(dict.fromkeys(name for row in models for name in row["checks"]))
    if not names:
        return 0
    groups = ["degenerate", *names]
    width = 0.8 / len(models)
    for i, row in enumerate(models):
        rates, errs = [], ([], [])
        for name in groups:
            if name == "degenerate":
                rate, (lo, hi) = row["degeneration_rate"], row["degeneration_ci95"]
            elif name in row["checks"]:
                rate, (lo, hi) = row["checks"][name]["failure_rate"], row["checks"][name]["failure_ci95"]
            else:
                rate = lo = hi = float("nan")
            rates.append(rate)
            errs[0].append(rate - lo)
            errs[1].append(hi - rate)
        ax.bar([g + (i - (len(models) - 1) / 2) * width for g in range(len(groups))], rates, width,
               yerr=[errs[0], errs[1]], capsize=3, label=row["label"])
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("candidates failing (95 % CI)")
    ax.set_title("Failure rate per check per model")
    ax.legend(fontsize=7)
    return len(models) * len(groups)


def omission(axes, evals: Evals) -> int:
    """Beside the loops: how often each model stopped early, and how much of the reference it reproduced."""
    rows = [row for _, data in evals for row in data["models"] if row.get("omission_rate") is not None]
    if not rows:
        return 0
    labels = [row["label"] for row in rows]
    rates = [row["omission_rate"] for row in rows]
    lows = [r - row["omission_ci95"][0] for r, row in zip(rates, rows, strict=True)]
    highs = [row["omission_ci95"][1] - r for r, row in zip(rates, rows, strict=True)]
    axes[0].bar(labels, rates, yerr=[lows, highs], capsize=6, color="#dd8452")
    axes[0].set_ylabel("stopped early (95 % CI)")
    axes[0].set_title("Omission rate per model")
    x = range(len(rows))
    axes[1].bar(x, [row["coverage_median"] or 0 for row in rows], color="#55a868", label="median")
    axes[1].plot(x, [row["coverage_mean"] or 0 for row in rows], "kD", label="mean")
    axes[1].set_xticks(list(x), labels)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_ylabel("share of the reference's words")
    axes[1].set_title("Coverage per model")
    axes[1].legend(loc="lower right")
    return len(rows)


def _side_cer(pairs: list[Pair], side: str) -> list[float]:
    return [p.scores(side).cer for p in pairs if p.scores(side).cer is not None]


def cer(ax, pairs: list[Pair]) -> int:
    chosen, rejected = _side_cer(pairs, "chosen"), _side_cer(pairs, "rejected")
    if chosen and rejected:
        top = max(max(chosen), min(max(rejected), 3.0))
        bins = [top * i / 30 for i in range(31)]
        ax.hist([min(v, top) for v in chosen], bins=bins, alpha=0.6, label="chosen", color="#55a868")
        ax.hist([min(v, top) for v in rejected], bins=bins, alpha=0.6, label="rejected", color="#c44e52")
        ax.set_xlabel("CER against the reference (capped at 3)")
        ax.set_title("Fidelity of chosen vs rejected")
        ax.legend()
    return len(chosen) + len(rejected) if chosen and rejected else 0


def _loops(candidates: list[Candidate], pairs: list[Pair]) -> list[tuple[int, float]]:
    """(unit length, onset as a fraction of the text) of every degenerate candidate seen, else of every
    degenerate rejected side."""
    out = []
    for cand in candidates:
        deg = cand.degeneration
        if deg and deg.verdict == "degenerate" and deg.unit and deg.start_char is not None:
            out.append((len(deg.unit), deg.start_char / max(len(cand.text), 1)))
    if not out:
        for p in pairs:
            s = p.rejected_scores
            if s.verdict == "degenerate" and s.unit_len and s.start_char is not None:
                out.append((s.unit_len, s.start_char / max(len(completion_text(p.rejected)), 1)))
    return out


def loop_shape(axes, candidates: list[Candidate], pairs: list[Pair]) -> int:
    loops = _loops(candidates, pairs)
    if loops:
        axes[0].hist([u for u, _ in loops], bins=20, color="#8172b2")
        axes[0].set_xlabel("loop unit (characters)")
        axes[0].set_title("Loop unit length")
        axes[1].hist([o for _, o in loops], bins=20, range=(0, 1), color="#937860")
        axes[1].set_xlabel("loop onset (fraction of the text before it)")
        axes[1].set_title("Where loops start")
    return len(loops)


def reasons(ax, pairs: list[Pair]) -> int:
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.reason or "unknown"] = counts.get(p.reason or "unknown", 0) + 1
    if counts:
        ax.barh(list(counts), list(counts.values()), color="#64b5cd")
        ax.set_xlabel("pairs")
        ax.set_title("Pairs by reason")
    return sum(counts.values())


def training(axes, rows: list[dict[str, Any]]) -> int:
    steps = [r["step"] for r in rows]
    panels = (("loss", ["loss", "eval/loss"]), ("reward margin", ["rewards/margins", "eval/rewards/margins"]),
              ("reward accuracy", ["rewards/accuracies", "eval/rewards/accuracies"]),
              ("log-prob", ["logps/chosen", "logps/rejected"]))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=key, marker="." if len(points) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    return len(steps)


# ------------------------------------------------------------------------------------------------- page
