"""`dpominer eval`: the degeneration rate and the omission rate (each with a 95 % interval), coverage and
fidelity of one or more models on the same documents, and the change against the first model. A model
that trades loops for stopping early shows it here: degeneration down, omission up, coverage down.
Sampling and scoring are `sample` and `score` themselves; this module only aggregates scored candidate
files. Pure apart from reading."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsonl import InputError, iter_jsonl
from .records import CandidateRecord


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
    omissions: int = 0  # stopped on its own short of the reference (omission.verdict == "omission")
    cut_short: int = 0  # short of the reference but cut off: a loop or max_tokens (omission.verdict == "cut")
    judged_omission: int = 0  # candidates with an omission verdict (the denominator of the omission rate)
    coverage: list[float] = field(default_factory=list)
    length_ratio: list[float] = field(default_factory=list)  # the candidate's words / the reference's
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
            if cand.fidelity and "coverage" in cand.fidelity:
                self.coverage.append(cand.fidelity["coverage"])
            if cand.omission is not None:
                self.judged_omission += 1
                self.omissions += cand.omission.verdict == "omission"
                self.cut_short += cand.omission.verdict == "cut"
                if cand.omission.length_ratio is not None:
                    self.length_ratio.append(cand.omission.length_ratio)
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
            "suspect": self.suspect, "suspect_rate": self.suspect / self.candidates if self.candidates else 0.0,
            "docs_with_loop_rate": doc_rate, "docs_with_loop_ci95": wilson(self.docs_with_loop, self.documents),
            "hit_max_tokens_rate": self.hit_max_tokens / self.candidates if self.candidates else 0.0,
            "loop_kinds": self.kinds,
            "loop_unit_chars_median": _median([float(u) for u in self.loop_unit_chars]),
            "loop_onset_median": _median(self.loop_onset),
            "cer_mean": _mean(self.cer), "cer_median": _median(self.cer),
            **self._checks_dict(),
            **self._omission_dict(),
        }

    def _omission_dict(self) -> dict[str, Any]:
        n = self.judged_omission
        return {
            "omission_rate": self.omissions / n if n else None, "omission_ci95": wilson(self.omissions, n),
            "omissions": self.omissions, "omission_judged": n,
            "cut_short_rate": self.cut_short / n if n else None,
            "coverage_mean": _mean(self.coverage), "coverage_median": _median(self.coverage),
            "length_ratio_median": _median(self.length_ratio),
            "coverage_below_half_rate": (sum(c < 0.5 for c in self.coverage) / len(self.coverage)
                                         if self.coverage else None),
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
    """Each model's change against the first: relative degeneration and omission rates, coverage, CER."""
    first = rows[0]
    out = []
    for row in rows:
        out.append({
            "label": row["label"],
            "degeneration_change": relative(first["degeneration_rate"], row["degeneration_rate"]),
            "docs_with_loop_change": relative(first["docs_with_loop_rate"], row["docs_with_loop_rate"]),
            "cer_change": relative(first["cer_mean"], row["cer_mean"]),
            "omission_change": relative(first.get("omission_rate"), row.get("omission_rate")),
            "coverage_median_change": relative(first.get("coverage_median"), row.get("coverage_median")),
            "coverage_mean_change": relative(first.get("coverage_mean"), row.get("coverage_mean")),
            "verdict": trade_off(first, row),
            **({"check_changes": {name: relative(first["checks"][name]["failure_rate"], check["failure_rate"])
                                  for name, check in row["checks"].items() if name in first.get("checks", {})},
                "failed_any_check_change": relative(first["failed_any_check_rate"], row["failed_any_check_rate"])}
               if "checks" in row and "checks" in first else {}),
        })
    return out


def trade_off(base: dict[str, Any], row: dict[str, Any]) -> str | None:
    """One line on what changed against the baseline, naming a trade of loops for early stops.

    "More" and "fewer" need the 95 % intervals apart; anything else reads "no clear change"."""
    if row is base:
        return None

    def moved(key: str) -> int:  # +1 clearly up, -1 clearly down, 0 overlapping intervals
        lo_b, hi_b = base.get(f"{key}_ci95") or (0, 0)
        lo_r, hi_r = row.get(f"{key}_ci95") or (0, 0)
        return 1 if lo_r > hi_b else -1 if hi_r < lo_b else 0

    loops, omission = moved("degeneration"), moved("omission") if row.get("omission_rate") is not None else 0
    if loops < 0 and omission > 0:
        return "fewer loops but more omissions: the model learned to stop early"
    words = {1: "more", -1: "fewer", 0: "no clear change in"}
    return f"{words[loops]} loops, {words[omission]} omissions"


def labels_for(names: list[str]) -> list[str]:
    """Short unique labels: a model dir's name, or a file's stem; numbered when two would clash."""
    base = [Path(n).name.removesuffix(".jsonl").removesuffix(".candidates") or n for n in names]
    return [b if base.count(b) == 1 else f"{i}-{b}" for i, b in enumerate(base)]


def sample_flags(sampling: dict[str, Any], backend: str, config: Path | None, dpi: int | None) -> list[str]:
    """The `dpominer sample` flags every model is sampled with: ``sampling`` (n, temperature, max_tokens,
    seed), the backend, and optionally a settings file and the PDF resolution."""
    flags = ["-n", str(sampling["n"]), "--temperature", str(sampling["temperature"]),
             "--max-tokens", str(sampling["max_tokens"]), "--seed", str(sampling["seed"]), "--backend", backend]
    flags += ["--config", str(config)] if config else []
    return flags + (["--dpi", str(dpi)] if dpi else [])


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
    from .scoring import run_score

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
