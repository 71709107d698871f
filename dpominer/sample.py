"""The `sample` stage: documents in, one candidate record per document out.

Records are appended to ``OUT.partial`` and flushed chunk by chunk; the file is renamed to ``OUT``
when every document is done. ``--resume`` keeps the complete records of ``OUT.partial`` (a torn last
line from a kill is cut off) and samples only the documents not yet in it. Seeds derive from
(document id, candidate index, base seed), so a resumed run gives the same texts as an uninterrupted
one, and ``--shard I/N`` picks documents by a stable hash of their id.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import images as page_images
from .backends import Backend, Completion, Request, SamplingSpec
from .images import DEFAULT_DPI
from .jsonl import InputError, iter_jsonl
from .models import DEFAULT_MODEL
from .partial import PartialOutput, partial_path
from .records import Document
from .runinfo import InputDigest, meta_path

T = TypeVar("T")


class SampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(DEFAULT_MODEL, description="hub id, local dir, or the alias smollm2-135m-instruct")
    backend: Literal["auto", "vllm", "hf", "openai"] = "auto"
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    chat_template: bool | None = Field(None, description="None: messages get the template, prompts do not")
    chunk_size: int = Field(64, ge=1, description="documents per backend call (and per flush)")
    shard: str | None = Field(None, description="I/N: this run samples shard I of N (0-based)")
    keep_token_ids: bool = True
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    threads: int | None = Field(None, ge=1)
    trust_remote_code: bool = False
    base_url: str | None = None
    concurrency: int = Field(8, ge=1)
    retries: int = Field(5, ge=0, description="backend openai: retries of a failed request (backoff 0.5 s, doubling)")
    dpi: int = Field(DEFAULT_DPI, ge=18, le=1200, description="resolution PDF pages are rendered at")

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is not None:
            index, _, count = value.partition("/")
            if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
                raise ValueError("must be I/N with 0 <= I < N, e.g. 0/4")
        return value


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from its parts, the same in every process (never Python's salted hash())."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def shard_of(doc_id: str, count: int) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % count


def in_shard(doc_id: str, shard: str | None) -> bool:
    if shard is None:
        return True
    index, count = (int(x) for x in shard.split("/"))
    return shard_of(doc_id, count) == index


@dataclass
class SampleSummary:
    documents: int = 0
    resumed: int = 0
    candidates: int = 0
    tokens: int = 0
    errors: int = 0
    finish_reasons: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("documents", "resumed", "candidates", "tokens", "errors",
                                             "finish_reasons", "error_examples", "seconds")}


RESUME_KEYS = {"model", "sampling", "chat_template", "shard", "keep_token_ids"}


def resume_settings(cfg: SampleConfig) -> dict[str, Any]:
    """What a record's texts depend on: a resumed run must use the same (the engine settings may change)."""
    return cfg.model_dump(mode="json", include=RESUME_KEYS)


def recorded_settings(output: Path) -> dict[str, Any] | None:
    """The settings an earlier run recorded, where there is no ``OUT.partial.json``: a finished output's
    meta file, else the model and sampling the first record carries (of the partial, or the output)."""
    partial = partial_path(output)
    meta = meta_path(output)
    reopening = output.exists() and not partial.exists()
    if reopening and meta.exists():
        try:
            config = orjson.loads(meta.read_bytes()).get("config") or {}
            return {k: v for k, v in config.items() if k in RESUME_KEYS}
        except (orjson.JSONDecodeError, AttributeError):
            pass
    source = output if reopening else partial
    if not source.exists():
        return None
    with source.open("rb") as handle:
        first = handle.readline()
    try:
        record = orjson.loads(first)
        return {"model": record["model"], "sampling": record["sampling"]}
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class BackendFailed(InputError):
    """The backend could not answer for some documents even after its retries; the run stops."""


def render(doc: Document, tokenizer, chat_template: bool | None) -> tuple[str, list[int] | None, list | None]:
    """(prompt text as the model sees it, its token ids, messages for servers that template)."""
    use_template = doc.conversational if chat_template is None else chat_template
    messages = doc.prompt_value() if doc.conversational else [{"role": "user", "content": doc.prompt}]
    if tokenizer is None:
        if doc.conversational or use_template:
            return "", None, messages
        return doc.prompt or "", None, None
    if doc.messages is not None:  # text-only content parts: a text model's template wants the string
        messages = [{**m, "content": message.text} for m, message in zip(messages, doc.messages, strict=True)]
    if use_template:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("--chat-template: the model's tokenizer has no chat template")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # The template already holds any BOS: adding special tokens again would double it.
        return text, tokenizer(text, add_special_tokens=False)["input_ids"], messages
    if doc.conversational:
        raise InputError("--no-chat-template: documents with 'messages' need the chat template")
    text = doc.prompt or ""
    return text, tokenizer(text)["input_ids"], None


def render_images(doc: Document, pictures: list, backend) -> tuple[str, list[int] | None, list]:
    """(prompt text, its ids with the image tokens expanded, messages) of an image document. A backend
    without a processor that tokenises itself has a text model; a server (no tokenizer) templates itself."""
    messages = doc.prompt_value()
    assert isinstance(messages, list)
    processor = getattr(backend, "processor", None)
    if processor is None:
        if backend.tokenizer is not None:
            raise ValueError("the model takes no images (it has no image processor)")
        return "", None, messages
    from . import multimodal

    text = multimodal.template_text(processor, messages, generation_prompt=True)
    return text, multimodal.encode(processor, text, pictures)["input_ids"], messages


def check_images(base: Path) -> Callable[[Document], None]:
    """For :func:`iter_jsonl`: every image of a document exists and reads (``images[i]: why``)."""
    def check(doc: Document) -> None:
        for i, ref in enumerate(doc.images or []):
            try:
                page_images.check(ref, base)
            except ValueError as exc:
                raise ValueError(f"images[{i}]: {exc}") from None
    return check


def _record(doc: Document, cfg: SampleConfig, backend_name: str, request: Request | None,
            completions: list[Completion], error: str | None, dirs: tuple[Path, Path]) -> dict[str, Any]:
    record = page_images.rebase_record(doc.model_dump(exclude_none=True), *dirs)
    if request is not None and request.images:
        record["image_info"] = [page_images.fingerprint(img) for img in request.images]
    if not record.get("meta"):
        record.pop("meta", None)
    # the backend that ran, not the flag: `auto` says nothing about where a text came from
    record |= {"model": cfg.model, "backend": backend_name, "sampling": cfg.sampling.model_dump(exclude_none=True)}
    if request is not None:
        if request.prompt_ids is not None:
            record["prompt_tokens"] = len(request.prompt_ids)
            if request.prompt_text != (doc.prompt or ""):
                record["rendered_prompt"] = request.prompt_text
        if request.max_tokens != cfg.sampling.max_tokens:
            record["max_tokens"] = request.max_tokens  # capped by the model's context
    if error is not None:
        record["error"] = error
    cands = []
    for index, comp in enumerate(completions):
        cand: dict[str, Any] = {"index": index, "text": comp.text, "finish_reason": comp.finish_reason,
                                "seed": comp.seed}
        if comp.token_ids is not None:
            cand["num_tokens"] = len(comp.token_ids)
            if cfg.keep_token_ids:
                cand["token_ids"] = comp.token_ids
        elif "num_tokens" in comp.extra:
            cand["num_tokens"] = comp.extra["num_tokens"]
        if comp.cumulative_logprob is not None:
            cand["cumulative_logprob"] = round(comp.cumulative_logprob, 4)
        if comp.token_logprobs is not None:
            # 2 decimals: what the detector reads (confidence climbing inside a loop), at ~6 bytes a token
            cand["token_logprobs"] = [round(lp, 2) + 0.0 for lp in comp.token_logprobs]
        if "error" in comp.extra:
            cand["error"] = comp.extra["error"]
        cands.append(cand)
    record["candidates"] = cands
    return record


Prepared = tuple[Document, Request | None, str | None]  # a request, or why the document has none


def _requests(docs: list[Document], cfg: SampleConfig, backend: Backend, base: Path) -> Iterator[Prepared]:
    context = backend.max_context()
    spec = cfg.sampling
    for doc in docs:
        pictures = None
        if doc.images:
            try:
                pictures = page_images.load_all(doc.images, base, cfg.dpi)
                text, ids, messages = render_images(doc, pictures, backend)
            except ValueError as exc:  # unreadable now, or more images than the processor takes
                yield doc, None, str(exc)
                continue
        else:
            text, ids, messages = render(doc, backend.tokenizer, cfg.chat_template)
        max_tokens = spec.max_tokens
        if ids is not None and context:
            if len(ids) >= context:
                yield doc, None, f"prompt is {len(ids)} tokens; the model's context is {context}"
                continue
            max_tokens = min(max_tokens, context - len(ids))
        seeds = [derive_seed(doc.id, index, spec.seed) for index in range(spec.n)]
        yield doc, Request(doc.id, text, ids, messages, seeds, max_tokens, pictures), None


def pending(docs_path: Path, partial: PartialOutput, cfg: SampleConfig, *, resume: bool, skip_invalid: bool,
            on_skip: Callable[[str], None] | None = None,
            on_line: Callable[[bytes], None] | None = None) -> tuple[set[str], int]:
    """Check the documents and the output state before any model is loaded.

    Takes the run lock, and on ``--resume`` checks the earlier run's settings and keeps its complete
    records (a finished ``OUT`` is taken up again: there may be more documents now). Returns the ids
    already done and how many are left. Bad documents stop the run here, before anything is generated.
    ``on_line`` sees every raw line of the documents (the input digest of the run record).
    """
    done = partial.start(resume=resume, reopen_finished=True, recorded=recorded_settings(partial.output))
    left = sum(1 for _ in _todo(docs_path, cfg, done, skip_invalid, on_skip, on_line))
    return done, left


def _todo(docs_path: Path, cfg: SampleConfig, done: set[str], skip_invalid: bool,
          on_skip: Callable[[str], None] | None = None,
          on_line: Callable[[bytes], None] | None = None) -> Iterator[Document]:
    """The documents of this shard not done yet, streamed."""
    for doc in iter_jsonl(docs_path, Document, skip_invalid=skip_invalid, on_skip=on_skip, on_line=on_line,
                          check=check_images(docs_path.parent)):
        if in_shard(doc.id, cfg.shard) and doc.id not in done:
            yield doc


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` items (the last one shorter); sampling and judging both work a chunk at a time."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_sample(docs_path: Path, partial: PartialOutput | Path, cfg: SampleConfig, backend: Backend, *,
               done: set[str] = frozenset(), skip_invalid: bool = False,
               on_chunk: Callable[[int, int, int], None] | None = None) -> SampleSummary:
    """Sample every document of ``docs_path`` in this shard and not in ``done`` into ``partial`` (started
    by :func:`pending`; given an output path, a fresh one), then rename it to the output. A document the
    backend failed on (a dead server after its retries) is not written: the run stops with one line,
    and ``--resume`` asks for it again."""
    if not isinstance(partial, PartialOutput):
        partial = PartialOutput(Path(partial), resume_settings(cfg))
        partial.start(resume=False)
    try:
        return _run(docs_path, partial, cfg, backend, done, skip_invalid, on_chunk)
    finally:
        partial.close()


def sample_file(docs: Path, output: Path, cfg: SampleConfig, *, resume: bool, skip_invalid: bool,
                progress: Callable[[int], AbstractContextManager[Callable[[int, int, int], None]]],
                ) -> tuple[SampleSummary, InputDigest, Backend]:
    """The `sample` command: check every document (hashing them for the run record) before the model
    loads, then sample what OUT.partial lacks (all of it without ``resume``) and rename it to OUT.
    ``progress(documents left)`` gives the per-chunk callback. Its seconds count from the model loaded."""
    from .backends import make_backend

    partial = PartialOutput(output, resume_settings(cfg))
    try:
        digest = InputDigest(docs)  # fed while the documents are checked, before the model loads
        done, left = pending(docs, partial, cfg, resume=resume, skip_invalid=skip_invalid, on_line=digest)
        engine = make_backend(cfg)
        start = time.perf_counter()
        with progress(left) as on_chunk:
            summary = run_sample(docs, partial, cfg, engine, done=done, skip_invalid=skip_invalid, on_chunk=on_chunk)
    finally:
        partial.close()
    summary.seconds = round(time.perf_counter() - start, 2)
    return summary, digest, engine


def _run(docs_path: Path, partial: PartialOutput, cfg: SampleConfig, backend: Backend, done: set[str],
         skip_invalid: bool, on_chunk: Callable[[int, int, int], None] | None) -> SampleSummary:
    summary = SampleSummary(resumed=len(done))
    for chunk in chunks(_todo(docs_path, cfg, done, skip_invalid), cfg.chunk_size):
        failed = _sample_chunk(chunk, cfg, backend, partial, summary, (docs_path.parent, partial.output.parent))
        if failed:
            kept = summary.documents + summary.resumed
            what = (f"{partial.path} keeps the {kept} documents done: rerun with --resume" if kept
                    else "nothing written: rerun")
            raise BackendFailed(f"{failed[0]} ({len(failed)} of {len(chunk)} documents in this chunk failed); "
                                f"{what} once the backend answers")
        if on_chunk is not None:
            on_chunk(len(chunk), summary.candidates, summary.tokens)
    partial.finish()
    return summary


def _sample_chunk(chunk: list[Document], cfg: SampleConfig, backend: Backend, partial: PartialOutput,
                  summary: SampleSummary, dirs: tuple[Path, Path]) -> list[str]:
    """Sample one chunk and append its records; returns the backend failures (their records are left out).
    ``dirs``: the documents' folder and the output's (image paths are rewritten from one to the other)."""
    prepared = list(_requests(chunk, cfg, backend, dirs[0]))
    requests = [request for _, request, _ in prepared if request is not None]
    results = iter(backend.generate(requests, cfg.sampling) if requests else [])
    lines, failed = [], []
    for doc, request, error in prepared:
        completions = next(results) if request is not None else []
        failure = next((c.extra["failed"] for c in completions if "failed" in c.extra), None)
        if failure is not None:
            failed.append(f"{doc.id}: {failure}")
            continue
        if error is not None:
            summary.errors += 1
            if len(summary.error_examples) < 5:
                summary.error_examples.append(f"{doc.id}: {error}")
        record = _record(doc, cfg, backend.name, request, completions, error, dirs)
        for cand in record["candidates"]:
            summary.finish_reasons[cand["finish_reason"]] = summary.finish_reasons.get(cand["finish_reason"], 0) + 1
            summary.tokens += cand.get("num_tokens", 0)
        summary.candidates += len(record["candidates"])
        summary.documents += 1
        lines.append(orjson.dumps(record) + b"\n")
    partial.append(lines)
    return failed
