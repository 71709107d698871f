"""`dpominer score --judge MODEL`: scoring plus an LLM judge on every non-degenerate candidate.

Records are scored (loops, fidelity) and judged a chunk at a time: all judge prompts of a chunk go to
the backend in one call, unparseable replies are asked again once (with a note saying what was wrong),
and what still fails is recorded as ``judge: {error}`` — excluded from pairing, counted in the summary.
Output goes to ``OUT.partial``, flushed per chunk, renamed when done: ``--resume`` continues a killed run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .backends import Backend, Request, SamplingSpec, make_backend
from .images import rebase_record
from .jsonl import iter_jsonl
from .partial import PartialOutput
from .records import CandidateRecord, Document
from .rubric import (
    DEFAULT_RUBRIC,
    RETRY_NOTE,
    JudgeError,
    Rubric,
    json_schema,
    load_rubric,
    messages,
    parse,
    spearman,
)
from .runinfo import InputDigest
from .sample import BackendFailed, SampleConfig, chunks, derive_seed, render
from .scoring import ScoreConfig, Summary, count_record, judge_record_omissions, scored_records


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="the judge: hub id, local dir, or an alias")
    backend: Literal["auto", "vllm", "hf", "openai"] = "auto"
    rubric: Rubric = Field(default_factory=lambda: DEFAULT_RUBRIC)
    max_tokens: int = Field(256, ge=16)
    temperature: float = Field(0.0, ge=0, description="first attempt; a retry samples at 0.7")
    retries: int = Field(1, ge=0)
    server_retries: int = Field(5, ge=0, description="backend openai: retries of a failed request, with backoff")
    chunk_size: int = Field(32, ge=1, description="records per backend call (and per flush)")
    seed: int = 0
    base_url: str | None = None
    max_model_len: int | None = Field(None, ge=16)
    dtype: str = "auto"
    threads: int | None = Field(None, ge=1)


def judge_config(flags: dict[str, tuple[str, Any]], rubric: Path | None) -> JudgeConfig:
    """The judge's settings from its flags (``--judge``, ``--judge-backend``, …) and ``--rubric``."""
    from .config import build_config

    cfg = build_config(JudgeConfig, None, flags)
    return cfg if rubric is None else cfg.model_copy(update={"rubric": load_rubric(rubric)})


def score_with_judge(src: Path, dst: Path, score_cfg: ScoreConfig, cfg: JudgeConfig, resume: bool,
                     skip_invalid: bool) -> tuple[Summary, InputDigest, dict]:
    """`score --judge`: check the whole input (and take its digest), take the lock and check a resumed
    run's settings before the judge loads, then score and judge it with a progress bar into ``OUT.partial``
    (kept on a stop, for ``--resume``). Returns the summary, the input digest and the engine's settings."""
    from .ui import judging_progress, reading

    with reading(src, "checking") as digest:
        total = sum(1 for _ in iter_jsonl(src, CandidateRecord, skip_invalid=skip_invalid, on_line=digest))
    partial = judge_partial(dst, score_cfg, cfg)
    try:
        done = partial.start(resume=resume)  # the lock and the settings check, before the judge loads
        engine = make_judge_backend(cfg)
        with judging_progress(total) as on_chunk:
            summary = run_judged_score(src, partial, score_cfg, cfg, engine, done=done, skip_invalid=skip_invalid,
                                       on_chunk=on_chunk)
    finally:
        partial.close()
    return summary, digest, engine.describe()


def make_judge_backend(cfg: JudgeConfig) -> Backend:
    return make_backend(SampleConfig(model=cfg.model, backend=cfg.backend, base_url=cfg.base_url, dtype=cfg.dtype,
                                     max_model_len=cfg.max_model_len, threads=cfg.threads, retries=cfg.server_retries,
                                     sampling=SamplingSpec(n=1, seed=cfg.seed)))


def task_text(record: CandidateRecord) -> str:
    """What the model was asked: the last user message, or the prompt string."""
    if record.messages is not None:
        users = [m.text for m in record.messages if m.role == "user"]
        return users[-1] if users else record.messages[-1].text
    return record.prompt or ""


def _request(backend: Backend, key: str, msgs: list[dict[str, str]], seed: int, max_tokens: int) -> Request | str:
    """A backend request for one judge prompt, or why there is none (too long for the judge)."""
    tokenizer = backend.tokenizer
    if tokenizer is None:  # a server applies its own chat template
        return Request(key, "", None, msgs, [seed], max_tokens)
    text, ids, _ = render(Document(id=key, messages=msgs), tokenizer, True)
    context = backend.max_context()
    if context and ids is not None and len(ids) + 16 > context:
        return f"judge prompt is {len(ids)} tokens; the judge's context is {context}"
    return Request(key, text, ids, msgs, [seed], min(max_tokens, context - len(ids)) if context else max_tokens)


def judge_chunk(chunk: list[CandidateRecord], backend: Backend, cfg: JudgeConfig, counts: Counter,
                rescore: bool = False) -> None:
    """Give every non-degenerate candidate of the chunk a ``judge`` dict (a judgement or an error)."""
    todo: list[tuple[CandidateRecord, Any, str | None]] = []  # (record, candidate, why the last try failed)
    for record in chunk:
        for cand in record.candidates:
            if cand.judge is not None and not rescore:
                continue
            if cand.finish_reason == "error" or (cand.degeneration and cand.degeneration.verdict == "degenerate"):
                counts["skipped_degenerate_or_error"] += 1
                continue
            todo.append((record, cand, None))
    schema = json_schema(cfg.rubric)
    for attempt in range(cfg.retries + 1):
        if not todo:
            return
        spec = SamplingSpec(n=1, temperature=cfg.temperature if attempt == 0 else 0.7, max_tokens=cfg.max_tokens,
                            seed=cfg.seed, json_schema=schema)
        asked, failed = [], []
        for record, cand, why in todo:
            msgs = messages(task_text(record), cand.text, cfg.rubric)
            if why is not None:
                msgs[-1]["content"] += RETRY_NOTE.format(why=why)
            seed = derive_seed(record.id, cand.index, "judge", cfg.seed, attempt)
            request = _request(backend, f"{record.id}#{cand.index}", msgs, seed, cfg.max_tokens)
            if isinstance(request, str):
                cand.judge = {"error": request}
                counts["errors"] += 1
            else:
                asked.append((record, cand, request))
        results = backend.generate([r for _, _, r in asked], spec) if asked else []
        counts["calls"] += bool(asked)
        failure = next((f"{r.doc_id}: {c.extra['failed']}" for (_, _, r), comps in zip(asked, results, strict=True)
                        for c in comps if "failed" in c.extra), None)
        if failure is not None:  # a dead judge server: stop, and keep the chunks judged before
            raise BackendFailed(f"{failure}; the records judged before this chunk are kept: rerun with --resume "
                                "once the judge answers")
        for (record, cand, _), completions in zip(asked, results, strict=True):
            raw = completions[0].text if completions else ""
            try:
                cand.judge = parse(raw, cfg.rubric)
                counts["judged"] += 1
                counts["retried_ok"] += attempt > 0
            except JudgeError as exc:
                why = f"{exc}; raw reply: {raw[:200]!r}" if attempt == cfg.retries else str(exc)
                failed.append((record, cand, why))
        todo = failed
    for _, cand, why in todo:
        cand.judge = {"error": f"unparseable after {cfg.retries + 1} tries: {why}"}
        counts["errors"] += 1


RESUME_EXEMPT = {"backend", "base_url", "chunk_size", "threads", "dtype", "max_model_len", "server_retries"}


def judge_partial(dst: Path, score_cfg: ScoreConfig, cfg: JudgeConfig) -> PartialOutput:
    """``OUT.partial`` of a judged scoring run, with the settings a ``--resume`` must keep: the judge model,
    rubric and criteria, its sampling and retries, and the scoring settings (they decide what is judged)."""
    settings = {"judge": cfg.model_dump(mode="json", exclude=RESUME_EXEMPT), "score": score_cfg.model_dump(mode="json")}
    return PartialOutput(dst, settings)


def run_judged_score(src: Path, partial: PartialOutput, score_cfg: ScoreConfig, cfg: JudgeConfig, backend: Backend, *,
                     done: set[str] = frozenset(), skip_invalid: bool = False,
                     on_chunk: Callable[[int], None] | None = None) -> Summary:
    """Score and judge the records of ``src`` not in ``done`` (started: ``partial.start``) into ``partial``."""
    summary = Summary()
    counts: Counter = Counter(resumed_records=len(done))
    agreement: list[tuple[float, float]] = []
    todo = (r for r in scored_records(src, score_cfg, skip_invalid, summary, None) if r.id not in done)
    for chunk in chunks(todo, cfg.chunk_size):
        judge_chunk(chunk, backend, cfg, counts, rescore=score_cfg.rescore)
        for record in chunk:
            judge_record_omissions(record, cfg.rubric.scale, score_cfg)
            count_record(summary, record)
            agreement += [(c.judge["score"], c.fidelity["cer"]) for c in record.candidates
                          if c.judge and "score" in c.judge and c.fidelity and "cer" in c.fidelity]
        partial.append(orjson.dumps(rebase_record(record.model_dump(exclude_none=True), src.parent,
                                                  partial.output.parent)) + b"\n" for record in chunk)
        if on_chunk is not None:
            on_chunk(len(chunk))
    partial.finish()
    rho = spearman([a for a, _ in agreement], [b for _, b in agreement])
    summary.judge = dict(counts) | {"judge_vs_cer_spearman": None if rho is None else round(rho, 4),
                                    "judge_vs_cer_n": len(agreement)}
    return summary
