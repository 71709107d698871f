"""`dpominer eval`: the degeneration rate (with a 95 % interval) and fidelity of one or more models on
the same documents, and the change against the first model. Sampling and scoring are `sample` and
`score` themselves; this module only aggregates scored candidate files. Pure apart from reading."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import CandidateRecord, InputError, iter_jsonl


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (Wilson 1927); (0, 0) for n = 0.

    The bounds always hold the rate k/n: at k = 0 the lower bound is exactly 0 and at k = n the upper is
    exactly 1 (in floating point they come out as 2.8e-17 and 0.9999999999999999, a negative error bar)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else min(p, max(0.0, centre - half))
    high = 1.0 if k == n else max(p, min(1.0, centre + half))
    return low, high


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class ModelEval:
    """What one model did on the documents (candidates from `sample`, scored by `score`)."""

    label: str
    documents: int = 0
    candidates: int = 0
    degenerate: int = 0
    suspect: int = 0  # undecided by the detector: the rate is understated by up to this share
    docs_with_loop: int = 0
    hit_max_tokens: int = 0
    errors: int = 0
    loop_unit_chars: list[int] = field(default_factory=list)
    loop_onset: list[float] = field(default_factory=list)  # start_char / len(text)
    cer: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, record: CandidateRecord) -> None:
        self.documents += 1
        looped = False
        for cand in record.candidates:
            if cand.finish_reason == "error":
                self.errors += 1
                continue
            self.candidates += 1
            self.hit_max_tokens += cand.finish_reason == "length"
            deg = cand.degeneration
            self.suspect += deg is not None and deg.verdict == "suspect"
            if deg is not None and deg.verdict == "degenerate":
                self.degenerate += 1
                looped = True
                self.kinds[deg.kind or "other"] = self.kinds.get(deg.kind or "other", 0) + 1
                if deg.unit:
                    self.loop_unit_chars.append(len(deg.unit))
                if deg.start_char is not None and cand.text:
                    self.loop_onset.append(deg.start_char / len(cand.text))
            if cand.fidelity and "cer" in cand.fidelity:
                self.cer.append(cand.fidelity["cer"])
        self.docs_with_loop += looped

    def as_dict(self) -> dict[str, Any]:
        rate = self.degenerate / self.candidates if self.candidates else 0.0
        doc_rate = self.docs_with_loop / self.documents if self.documents else 0.0
        return {
            "label": self.label, "documents": self.documents, "candidates": self.candidates,
            "errors": self.errors,
            "degeneration_rate": rate, "degeneration_ci95": wilson(self.degenerate, self.candidates),
            "degenerate": self.degenerate,
            "suspect": self.suspect, "suspect_rate": self.suspect / self.candidates if self.candidates else 0.0,
            "docs_with_loop_rate": doc_rate, "docs_with_loop_ci95": wilson(self.docs_with_loop, self.documents),
            "hit_max_tokens_rate": self.hit_max_tokens / self.candidates if self.candidates else 0.0,
            "loop_kinds": self.kinds,
            "loop_unit_chars_median": _median([float(u) for u in self.loop_unit_chars]),
            "loop_onset_median": _median(self.loop_onset),
            "cer_mean": _mean(self.cer), "cer_median": _median(self.cer),
        }


def evaluate_file(path: Path, label: str) -> ModelEval:
    result = ModelEval(label)
    for record in iter_jsonl(path, CandidateRecord):
        result.add(record)
    return result


def relative(before: float | None, after: float | None) -> float | None:
    """(after − before) / before; None when undefined."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each model's change against the first: relative degeneration rate and CER."""
    first = rows[0]
    out = []
    for row in rows:
        out.append({
            "label": row["label"],
            "degeneration_change": relative(first["degeneration_rate"], row["degeneration_rate"]),
            "docs_with_loop_change": relative(first["docs_with_loop_rate"], row["docs_with_loop_rate"]),
            "cer_change": relative(first["cer_mean"], row["cer_mean"]),
        })
    return out


def labels_for(names: list[str]) -> list[str]:
    """Short unique labels: a model dir's name, or a file's stem; numbered when two would clash."""
    base = [Path(n).name.removesuffix(".jsonl").removesuffix(".candidates") or n for n in names]
    return [b if base.count(b) == 1 else f"{i}-{b}" for i, b in enumerate(base)]


def sample_command(docs: Path, model: str, output: Path, sample_flags: list[str], resume: bool = False) -> list[str]:
    """`dpominer sample` as a child process: each model gets a fresh engine, and memory is freed after."""
    return [sys.executable, "-m", "dpominer", "sample", str(docs), "-o", str(output), "--model", model,
            *sample_flags, *(["--resume"] if resume else [])]


def plan(models: list[str], candidates: list[Path], out_dir: Path) -> list[tuple[str, str | None, Path, Path]]:
    """(label, model or None, candidate file, scored file) per input: every file eval writes but eval.json."""
    rows: list[tuple[str, str | None, Path, Path]] = []
    for label, model in zip(labels_for(models), models, strict=True):
        rows.append((label, model, out_dir / f"{label}.candidates.jsonl", out_dir / f"{label}.scored.jsonl"))
    for label, path in zip(labels_for([str(c) for c in candidates]), candidates, strict=True):
        rows.append((label, None, path, out_dir / f"{label}.scored.jsonl"))
    return rows


def run_eval(docs: Path | None, models: list[str], candidates: list[Path], out_dir: Path,
             sample_flags: list[str], score_cfg, resume: bool = False) -> dict[str, Any]:
    """Sample (for models) and score every input, then aggregate; returns what eval.json holds.

    Sampling goes through `dpominer sample` and its partial files, so ``resume`` continues a killed
    eval: finished models are kept (their settings checked), a half-sampled one goes on where it stopped."""
    from .mining import run_score

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, model, cand_path, scored in plan(models, candidates, out_dir):
        if model is not None:
            proc = subprocess.run(sample_command(docs, model, cand_path, sample_flags, resume))  # type: ignore[arg-type]
            if proc.returncode != 0:
                raise InputError(f"--model {model}: `dpominer sample` failed (exit {proc.returncode}; see above)"
                                 + ("" if resume else "; after a stop, rerun eval with --resume"))
        run_score(cand_path, scored, score_cfg)
        rows.append(evaluate_file(scored, label).as_dict() | {"candidates_file": str(cand_path),
                                                                 "scored_file": str(scored)})
    return {"models": rows, "changes": compare(rows)}
