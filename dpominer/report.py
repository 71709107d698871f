"""`dpominer report`: one self-contained HTML page (PNG plots embedded) from whatever runs it is given —
candidate or scored files, pairs, a training run's metrics.jsonl, an eval.json — plus the PNGs beside it.

Reading sorts each input by what its records hold; plotting is matplotlib (Agg), one function per plot,
each returning how many data points it drew, so a plot with no data is left out, not drawn empty.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .guard import check_write
from .jsonl import InputError, atomic_output


@dataclass
class Runs:
    evals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    metrics: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # scored candidate dicts, flattened
    sources: list[str] = field(default_factory=list)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: invalid JSON: {exc}") from None
    return rows


def _add_file(runs: Runs, path: Path) -> None:
    from .records import CandidateRecord
    from .scoring import ScoreConfig, score_record

    label = path.parent.name if path.name in {"eval.json", "metrics.jsonl"} else path.stem
    if path.suffix == ".json":
        data = orjson.loads(path.read_bytes())
        if not (isinstance(data, dict) and "models" in data):
            raise InputError(f"{path}: not an eval.json (no 'models')")
        runs.evals.append((label, data))
    else:
        rows = _jsonl(path)
        first = rows[0] if rows else {}
        if "step" in first and "loss" in first:
            runs.metrics.append((label, rows))
        elif "chosen" in first and "rejected" in first:
            runs.pairs += [row | {"_folder": path.parent} if row.get("images") else row for row in rows]
        elif "candidates" in first:
            cfg = ScoreConfig()
            for row in rows:
                record = score_record(CandidateRecord.model_validate(row), cfg)  # scores kept when present
                runs.candidates += [c.model_dump(exclude_none=True) for c in record.candidates]
        else:
            raise InputError(f"{path}: not candidates, pairs or training metrics (first record's keys: "
                             f"{', '.join(list(first)[:6]) or 'none'})")
    runs.sources.append(str(path))


def input_files(paths: list[Path]) -> list[Path]:
    """The files a report reads: each path, a folder standing for its eval.json, metrics.jsonl and *.jsonl."""
    files = []
    for path in paths:
        if path.is_dir():
            found = [p for p in (path / "eval.json", path / "metrics.jsonl") if p.exists()]
            found += sorted(p for p in path.glob("*.jsonl") if p.name != "metrics.jsonl"
                            and not p.name.endswith(".candidates.jsonl"))  # eval's scored copies suffice
            if not found:
                raise InputError(f"{path}: no eval.json, metrics.jsonl or JSONL files in this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def collect(paths: list[Path]) -> Runs:
    """Read every input file (see :func:`input_files`)."""
    runs = Runs()
    for path in input_files(paths):
        _add_file(runs, path)
    return runs


# ------------------------------------------------------------------------------------------------ plots

def _plot_degeneration(ax, runs: Runs) -> int:
    labels, rates, lows, highs = [], [], [], []
    for _, data in runs.evals:
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


def _plot_checks(ax, runs: Runs) -> int:
    """Grouped bars: per check (and degeneration, for scale), one bar per model, with 95 % intervals."""
    models = [row for _, data in runs.evals for row in data["models"] if row.get("checks")]
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


def _plot_omission(axes, runs: Runs) -> int:
    """Beside the loops: how often each model stopped early, and how much of the reference it reproduced."""
    rows = [row for _, data in runs.evals for row in data["models"] if row.get("omission_rate") is not None]
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


def _side_cer(pairs: list[dict[str, Any]], side: str) -> list[float]:
    values = [(p.get(f"{side}_scores") or {}).get("fidelity", {}).get("cer") for p in pairs]
    return [v for v in values if v is not None]


def _plot_cer(ax, runs: Runs) -> int:
    chosen, rejected = _side_cer(runs.pairs, "chosen"), _side_cer(runs.pairs, "rejected")
    if chosen and rejected:
        top = max(max(chosen), min(max(rejected), 3.0))
        bins = [top * i / 30 for i in range(31)]
        ax.hist([min(v, top) for v in chosen], bins=bins, alpha=0.6, label="chosen", color="#55a868")
        ax.hist([min(v, top) for v in rejected], bins=bins, alpha=0.6, label="rejected", color="#c44e52")
        ax.set_xlabel("CER against the reference (capped at 3)")
        ax.set_title("Fidelity of chosen vs rejected")
        ax.legend()
    return len(chosen) + len(rejected) if chosen and rejected else 0


def _loops(runs: Runs) -> list[tuple[int, float]]:
    """(unit length, onset as a fraction of the text) of every degenerate candidate seen."""
    out = []
    for cand in runs.candidates:
        deg = cand.get("degeneration") or {}
        if deg.get("verdict") == "degenerate" and deg.get("unit") and deg.get("start_char") is not None:
            out.append((len(deg["unit"]), deg["start_char"] / max(len(cand["text"]), 1)))
    if not out:
        for p in runs.pairs:
            s = p.get("rejected_scores") or {}
            text = _completion_text(p["rejected"])
            if s.get("verdict") == "degenerate" and s.get("unit_len") and s.get("start_char") is not None:
                out.append((s["unit_len"], s["start_char"] / max(len(text), 1)))
    return out


def _plot_loop_shape(axes, runs: Runs) -> int:
    loops = _loops(runs)
    if loops:
        axes[0].hist([u for u, _ in loops], bins=20, color="#8172b2")
        axes[0].set_xlabel("loop unit (characters)")
        axes[0].set_title("Loop unit length")
        axes[1].hist([o for _, o in loops], bins=20, range=(0, 1), color="#937860")
        axes[1].set_xlabel("loop onset (fraction of the text before it)")
        axes[1].set_title("Where loops start")
    return len(loops)


def _plot_reasons(ax, runs: Runs) -> int:
    counts: dict[str, int] = {}
    for p in runs.pairs:
        counts[p.get("reason", "unknown")] = counts.get(p.get("reason", "unknown"), 0) + 1
    if counts:
        ax.barh(list(counts), list(counts.values()), color="#64b5cd")
        ax.set_xlabel("pairs")
        ax.set_title("Pairs by reason")
    return sum(counts.values())


def _plot_training(axes, rows: list[dict[str, Any]]) -> int:
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


def likelihood_displacement(rows: list[dict[str, Any]]) -> str | None:
    """A warning when the chosen side's log-prob fell over training (Razin et al. 2024)."""
    if len(rows) < 2:
        return None
    k = max(1, len(rows) // 10)
    start = sum(r["logps/chosen"] for r in rows[:k]) / k
    end = sum(r["logps/chosen"] for r in rows[-k:]) / k
    if end < start - 0.05 * abs(start):
        return (f"logps/chosen fell from {start:.1f} to {end:.1f}: likelihood displacement — the model pushes "
                "the rejected side down by also lowering the chosen one. Consider --sft-weight or a lower --lr.")
    return None


# ------------------------------------------------------------------------------------------------- page

def _figure(draw, rows: int = 1, cols: int = 1) -> tuple[bytes, int]:
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


def _completion_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    content = value[-1]["content"]
    if isinstance(content, list):  # content parts (image pairs)
        return "".join(part.get("text") or "" for part in content if part.get("type") == "text")
    return content


def _thumbnails(pair: dict[str, Any], width: int = 220) -> str:
    """The pair's page images, shrunk and embedded (the page stays self-contained); a note when unreadable."""
    from . import images

    out = []
    for i, ref in enumerate(pair.get("images") or []):
        ref = images.PdfPage.model_validate(ref) if isinstance(ref, dict) else ref
        try:
            page = images.load(ref, pair["_folder"], dpi=72)
        except ValueError as exc:
            out.append(f"<small>images[{i}]: {html.escape(str(exc))}</small>")
            continue
        page.thumbnail((width, width * 2))
        buf = io.BytesIO()
        page.save(buf, format="PNG")
        out.append(f'<img class=page alt="{html.escape(images.describe(ref))}" '
                   f'src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">')
    return "".join(out)


def _highlighted(text: str, start: int | None, limit: int = 900) -> str:
    """The rejected text with the loop marked from its onset; long texts cut in the middle."""
    if start is None or start >= len(text):
        return html.escape(text[:limit]) + ("…" if len(text) > limit else "")
    head = text[:start][-300:]
    loop = text[start:start + limit - len(head)]
    cut = "…" if len(text) > start + len(loop) else ""
    return ("…" if start > 300 else "") + html.escape(head) + f"<mark>{html.escape(loop)}</mark>{cut}"


def _examples(pairs: list[dict[str, Any]], count: int) -> str:
    picked = [p for p in pairs if p.get("reason") == "rejected_degenerate"][:count] or pairs[:count]
    rows = []
    pages = any(p.get("images") for p in picked)
    for p in picked:
        scores = p.get("rejected_scores") or {}
        page = f"<td>{_thumbnails(p)}</td>" if pages else ""
        rows.append(
            f"<tr><td>{html.escape(str(p.get('id', '')))}<br><small>{html.escape(str(scores.get('kind') or ''))}"
            f"</small></td>{page}<td class=t>{html.escape(_completion_text(p['chosen'])[:600])}</td>"
            f"<td class=t>{_highlighted(_completion_text(p['rejected']), scores.get('start_char'))}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Example pairs</h2><p>The loop is highlighted from the onset the detector found.</p>"
            f"<table><tr><th>id</th>{'<th>page</th>' if pages else ''}<th>chosen</th><th>rejected</th></tr>"
            + "".join(rows) + "</table>")


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _eval_row(m: dict[str, Any], c: dict[str, Any], checks: list[str]) -> str:
    omission = "–" if m.get("omission_rate") is None else (
        f"{m['omission_rate']:.1%} ({m['omission_ci95'][0]:.1%}–{m['omission_ci95'][1]:.1%})")
    cells = [html.escape(m["label"]),
             f"{m['degeneration_rate']:.1%} ({m['degeneration_ci95'][0]:.1%}–{m['degeneration_ci95'][1]:.1%})",
             _fmt(c.get("degeneration_change"), "+.0%"), omission, _fmt(c.get("omission_change"), "+.0%"),
             f"{_fmt(m.get('coverage_median'), '.2f')} / {_fmt(m.get('coverage_mean'), '.2f')}",
             *(_rate_cell(m["checks"][n]["failure_rate"], m["checks"][n]["failure_ci95"])
               if n in m.get("checks", {}) else "–" for n in checks),
             _fmt(m.get("cer_mean"), ".3f"), html.escape(c.get("verdict") or "")]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _rate_cell(rate: float, ci: list[float]) -> str:
    return f"{rate:.1%} ({ci[0]:.1%}–{ci[1]:.1%})"


def _eval_table(runs: Runs) -> str:
    out = []
    head = ("model", "degeneration (95 % CI)", "change vs first", "omission (95 % CI)", "change vs first",
            "coverage median / mean", "mean CER", "what changed")
    for label, data in runs.evals:
        names = list(dict.fromkeys(n for m in data["models"] for n in m.get("checks", {})))
        heads = (*head[:6], *(f"fails {html.escape(n)} (95 % CI)" for n in names), *head[6:])
        rows = "".join(_eval_row(m, c, names) for m, c in zip(data["models"], data["changes"], strict=True))
        out.append(f"<h2>Evaluation: {html.escape(label)}</h2><table><tr>"
                   + "".join(f"<th>{h}</th>" for h in heads) + f"</tr>{rows}</table>")
    return "".join(out)


STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}table{border-collapse:collapse;width:100%;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}td.t{font:12px/1.35 monospace;
white-space:pre-wrap;max-width:520px}mark{background:#ffd6d6}.warn{background:#fff4d6;border-left:4px solid #e0a800;
padding:.6em 1em}small{color:#666}img.page{max-width:220px;margin:0}"""


def build(paths: list[Path], output: Path, examples: int = 6) -> dict[str, int]:
    """Write the page and its PNGs; returns {plot name: data points drawn} for the plots kept."""
    runs = collect(paths)
    plots: list[tuple[str, str, bytes, int]] = []

    def add(name: str, title: str, draw, rows: int = 1, cols: int = 1) -> None:
        png, points = _figure(draw, rows, cols)
        if points:
            plots.append((name, title, png, points))

    add("degeneration_rate", "Degeneration rate per model", lambda ax: _plot_degeneration(ax, runs))
    add("check_failures", "Failure rate per check per model", lambda ax: _plot_checks(ax, runs))
    add("omission_coverage", "Omission and coverage per model", lambda axes: _plot_omission(axes, runs), cols=2)
    add("cer_chosen_rejected", "Fidelity of chosen vs rejected", lambda ax: _plot_cer(ax, runs))
    add("loop_shape", "Loop unit length and onset", lambda axes: _plot_loop_shape(axes, runs), cols=2)
    add("pairs_by_reason", "Pairs by reason", lambda ax: _plot_reasons(ax, runs))
    warnings = []
    for label, rows in runs.metrics:
        add(f"training_{label}", f"Training: {label}", lambda axes, rows=rows: _plot_training(axes, rows), 2, 2)
        if (warning := likelihood_displacement(rows)) is not None:
            warnings.append(f"<p class=warn><b>{html.escape(label)}</b>: {html.escape(warning)}</p>")
    if not plots:
        raise InputError("nothing to plot: give candidate or scored files, pairs, metrics.jsonl or eval.json")

    assets = {name: output.with_name(f"{output.stem}-{name}.png") for name, *_ in plots}
    for path in (output, *assets.values()):
        check_write(path)  # every file is checked before the first is written
    sections = []
    for name, title, png, points in plots:
        with atomic_output(assets[name]) as f:
            f.write(png)
        sections.append(f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" data-points="{points}" '
                        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    sources = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in runs.sources)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>dpominer report</title><style>{STYLE}</style>"
            f"</head><body><h1>dpominer report</h1>{''.join(warnings)}{_eval_table(runs)}{''.join(sections)}"
            f"{_examples(runs.pairs, examples)}<h2>Inputs</h2><ul>{sources}</ul></body></html>")
    with atomic_output(output) as f:
        f.write(page.encode())
    return {name: points for name, _, _, points in plots}
