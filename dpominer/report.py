"""`dpominer report`: one self-contained HTML page (PNG plots embedded) from whatever runs it is given —
candidate or scored files, pairs, a training run's metrics.jsonl, an eval.json — plus the PNGs beside it.

Reading sorts each input by what its first record holds and reads pairs and candidates through their
record models (a bad line is ``path:LINE: why``); the plots are :mod:`dpominer.plots`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import plots as plot
from .guard import check_write
from .jsonl import InputError, atomic_output, iter_jsonl, read_lines
from .records import Candidate, CandidateRecord, Pair


@dataclass
class Runs:
    evals: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    metrics: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    pair_folders: list[Path] = field(default_factory=list)  # each pair's file's folder: its images resolve there
    candidates: list[Candidate] = field(default_factory=list)  # scored, flattened
    sources: list[str] = field(default_factory=list)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, in order (anything else on a line is ``path:LINE: why``)."""
    for lineno, raw in read_lines(path):
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{lineno}: invalid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        yield row


def _add_file(runs: Runs, path: Path) -> None:
    from .scoring import ScoreConfig, score_record

    label = path.parent.name if path.name in {"eval.json", "metrics.jsonl"} else path.stem
    if path.suffix == ".json":
        data = orjson.loads(path.read_bytes())
        if not (isinstance(data, dict) and "models" in data):
            raise InputError(f"{path}: not an eval.json (no 'models')")
        runs.evals.append((label, data))
    elif "step" in (first := next(_rows(path), {})) and "loss" in first:
        runs.metrics.append((label, list(_rows(path))))
    elif "chosen" in first and "rejected" in first:
        pairs = list(iter_jsonl(path, Pair, unique_ids=False))
        runs.pairs += pairs
        runs.pair_folders += [path.parent] * len(pairs)
    elif "candidates" in first:
        cfg = ScoreConfig()
        for record in iter_jsonl(path, CandidateRecord, unique_ids=False):
            runs.candidates += score_record(record, cfg).candidates  # scores kept when present
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


def _thumbnails(pair: Pair, folder: Path, width: int = 220) -> str:
    """The pair's page images, shrunk and embedded (the page stays self-contained); a note when unreadable."""
    from . import images

    out = []
    for i, ref in enumerate(pair.images or []):
        try:
            page = images.load(ref, folder, dpi=72)
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


def _examples(pairs: list[Pair], folders: list[Path], count: int) -> str:
    """A table of up to ``count`` pairs (degenerate rejections first) with the rejected side's loop marked."""
    shown = list(zip(pairs, folders, strict=True))
    picked = [(p, f) for p, f in shown if p.reason == "rejected_degenerate"][:count] or shown[:count]
    rows = []
    pages = any(p.images for p, _ in picked)
    for p, folder in picked:
        scores = p.rejected_scores
        page = f"<td>{_thumbnails(p, folder)}</td>" if pages else ""
        rows.append(
            f"<tr><td>{html.escape(p.id or '')}<br><small>{html.escape(scores.kind or '')}"
            f"</small></td>{page}<td class=t>{html.escape(plot.completion_text(p.chosen)[:600])}</td>"
            f"<td class=t>{_highlighted(plot.completion_text(p.rejected), scores.start_char)}</td></tr>")
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
        png, points = plot.figure(draw, rows, cols)
        if points:
            plots.append((name, title, png, points))

    add("degeneration_rate", "Degeneration rate per model", lambda ax: plot.degeneration(ax, runs.evals))
    add("check_failures", "Failure rate per check per model", lambda ax: plot.checks(ax, runs.evals))
    add("omission_coverage", "Omission and coverage per model", lambda axes: plot.omission(axes, runs.evals), cols=2)
    add("cer_chosen_rejected", "Fidelity of chosen vs rejected", lambda ax: plot.cer(ax, runs.pairs))
    add("loop_shape", "Loop unit length and onset",
        lambda axes: plot.loop_shape(axes, runs.candidates, runs.pairs), cols=2)
    add("pairs_by_reason", "Pairs by reason", lambda ax: plot.reasons(ax, runs.pairs))
    warnings = []
    for label, rows in runs.metrics:
        add(f"training_{label}", f"Training: {label}", lambda axes, rows=rows: plot.training(axes, rows), 2, 2)
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
            f"{_examples(runs.pairs, runs.pair_folders, examples)}<h2>Inputs</h2><ul>{sources}</ul></body></html>")
    with atomic_output(output) as f:
        f.write(page.encode())
    return {name: points for name, _, _, points in plots}
