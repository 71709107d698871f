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
    """Wilson score interval for k successes in n trials (Wilson 1927); (0, 0) for n = 0."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
    docs_with_loop: int = 0
    hit_max_tokens: int = 0
    errors: int = 0
    loop_unit_chars: list[int] = field(default_factory=list)
    loop_onset: list[float] = field(default_factory=list)  # start_char / len(text)
    cer: list[float] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)
    check_counts: dict[str, list[int]] = field(default_factory=dict)  # check name → [failed, checked]
    failed_any: int = 0  # candidates failing at least one check
    checked_any: int = 0  # candidates at least one check ran on

    def _add_checks(self, cand) -> None:
        if not cand.checks:
            return
        for result in cand.checks:
            counts = self.check_counts.setdefault(result.name, [0, 0])
            counts[0] += not result.passed
            counts[1] += 1
        self.checked_any += 1
        self.failed_any += bool(cand.failed_checks)

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
            self._add_checks(cand)
        self.docs_with_loop += looped

    def as_dict(self) -> dict[str, Any]:
        rate = self.degenerate / self.candidates if self.candidates else 0.0
        doc_rate = self.docs_with_loop / self.documents if self.documents else 0.0
        return {
            "label": self.label, "documents": self.documents, "candidates": self.candidates,
            "errors": self.errors,
            "degeneration_rate": rate, "degeneration_ci95": wilson(self.degenerate, self.candidates),
            "degenerate": self.degenerate,
            "docs_with_loop_rate": doc_rate, "docs_with_loop_ci95": wilson(self.docs_with_loop, self.documents),
            "hit_max_tokens_rate": self.hit_max_tokens / self.candidates if self.candidates else 0.0,
            "loop_kinds": self.kinds,
            "loop_unit_chars_median": _median([float(u) for u in self.loop_unit_chars]),
            "loop_onset_median": _median(self.loop_onset),
            "cer_mean": _mean(self.cer), "cer_median": _median(self.cer),
            **self._checks_dict(),
        }

    def _checks_dict(self) -> dict[str, Any]:
        """Failure rate per check (over the candidates it ran on) and of any check, with Wilson intervals."""
        if not self.check_counts:
            return {}
        per_check = {name: {"failed": failed, "checked": checked, "failure_rate": failed / checked,
                            "failure_ci95": wilson(failed, checked)}
                     for name, (failed, checked) in self.check_counts.items()}
        return {"checks": per_check, "failed_any_check": self.failed_any, "checked_candidates": self.checked_any,
                "failed_any_check_rate": self.failed_any / self.checked_any,
                "failed_any_check_ci95": wilson(self.failed_any, self.checked_any)}


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
            **({"check_changes": {name: relative(first["checks"][name]["failure_rate"], check["failure_rate"])
                                  for name, check in row["checks"].items() if name in first.get("checks", {})},
                "failed_any_check_change": relative(first["failed_any_check_rate"], row["failed_any_check_rate"])}
               if "checks" in row and "checks" in first else {}),
        })
    return out


def labels_for(names: list[str]) -> list[str]:
    """Short unique labels: a model dir's name, or a file's stem; numbered when two would clash."""
    base = [Path(n).name.removesuffix(".jsonl").removesuffix(".candidates") or n for n in names]
    return [b if base.count(b) == 1 else f"{i}-{b}" for i, b in enumerate(base)]


def sample_command(docs: Path, model: str, output: Path, sample_flags: list[str]) -> list[str]:
    """`dpominer sample` as a child process: each model gets a fresh engine, and memory is freed after."""
    return [sys.executable, "-m", "dpominer", "sample", str(docs), "-o", str(output), "--model", model,
            *sample_flags]


def run_eval(docs: Path | None, models: list[str], candidates: list[Path], out_dir: Path,
             sample_flags: list[str], score_cfg) -> dict[str, Any]:
    """Sample (for models) and score every input, then aggregate; returns what eval.json holds."""
    from .mining import run_score

    out_dir.mkdir(parents=True, exist_ok=True)
    sources: list[tuple[str, Path]] = []
    for label, model in zip(labels_for(models), models, strict=True):
        cand_path = out_dir / f"{label}.candidates.jsonl"
        proc = subprocess.run(sample_command(docs, model, cand_path, sample_flags))  # type: ignore[arg-type]
        if proc.returncode != 0:
            raise InputError(f"--model {model}: `dpominer sample` failed (exit {proc.returncode}; see above)")
        sources.append((label, cand_path))
    sources += list(zip(labels_for([str(c) for c in candidates]), candidates, strict=True))
    rows = []
    for label, path in sources:
        scored = out_dir / f"{label}.scored.jsonl"
        run_score(path, scored, score_cfg)
        rows.append(evaluate_file(scored, label).as_dict() | {"candidates_file": str(path),
                                                               "scored_file": str(scored)})
    return {"models": rows, "changes": compare(rows)}
