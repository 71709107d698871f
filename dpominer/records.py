"""Record models: the public file formats (documents, candidates, pairs), one pydantic model each.

Reading and writing them, one line at a time, is :mod:`dpominer.jsonl`.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from .images import ImageRef, PdfPage
from .jsonl import (  # noqa: F401 — re-exported: the I/O's old home, imported so by pairing, scoring and users
    InputError,
    admit,
    atomic_output,
    dumps,
    first_error,
    iter_jsonl,
    parse_line,
    read_lines,
    write_json,
)
from .omission import Omission

FinishReason = Literal["stop", "length", "repetition", "error"]
CUT_OFF = frozenset({"length", "repetition"})  # never ended on its own (max_tokens, loop stop): no end-of-turn


def _image_refs(value: Any) -> Any:
    """A document's or pair's ``images``: ``{"pdf", "page"}`` entries as PdfPage, paths as they are."""
    if isinstance(value, list):
        return [PdfPage.model_validate(v) if isinstance(v, dict) else v for v in value]
    return value


class ContentPart(BaseModel):
    """A part of a multimodal message: ``{"type": "image"}`` (the next of the document's images) or
    ``{"type": "text", "text": …}``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image", "text"]
    text: str | None = None

    @model_validator(mode="after")
    def _text_has_text(self):
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        return self


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[ContentPart]

    @property
    def text(self) -> str:
        """The message's text (text parts joined); images left out."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")

    @property
    def image_parts(self) -> int:
        return 0 if isinstance(self.content, str) else sum(part.type == "image" for part in self.content)


class _Prompted(BaseModel):
    """A document's input side: a plain ``prompt`` string or a chat ``messages`` list."""

    model_config = ConfigDict(extra="allow")
    id: str = ""
    prompt: str | None = None
    messages: list[Message] | None = None
    reference: str | None = None
    images: list[ImageRef] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("images", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return _image_refs(value)

    @model_validator(mode="after")
    def _one_input(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("needs exactly one of 'prompt' (string) or 'messages' (list of {role, content})")
        if self.messages is not None and not self.messages:
            raise ValueError("'messages' is empty")
        parts = sum(m.image_parts for m in self.messages or [])
        if self.images is not None or parts:
            images = len(self.images or [])
            if self.messages is None:
                raise ValueError("'images' need 'messages' with one {\"type\": \"image\"} content part per image")
            if parts != images:
                raise ValueError(f"{parts} image content part(s) in 'messages' but {images} entries in 'images'")
        if not self.id:
            # Stable across processes and machines (never Python's salted hash()).
            self.id = "doc-" + hashlib.blake2b(orjson.dumps(self.prompt_value()), digest_size=8).hexdigest()
        return self

    @property
    def conversational(self) -> bool:
        return self.messages is not None

    @property
    def has_images(self) -> bool:
        return bool(self.images)

    def prompt_value(self) -> str | list[dict[str, Any]]:
        """The prompt as TRL wants it: the string, or the message list."""
        if self.messages is not None:
            return [m.model_dump(exclude_none=True) for m in self.messages]
        assert self.prompt is not None
        return self.prompt


class Document(_Prompted):
    """Input document: ``{"id", "prompt"|"messages", "reference"?, "meta"?}``."""


class Degeneration(BaseModel):
    model_config = ConfigDict(extra="allow")
    verdict: Literal["degenerate", "suspect", "clean"]
    kind: str | None = None
    why: str = ""
    severity: float = 0.0
    signals: dict[str, Any] = Field(default_factory=dict)
    unit: str | None = None
    start_char: int | None = None
    copies: float | None = None


class CheckResult(BaseModel):
    """One failure check's verdict on a candidate (``dpominer score --check``)."""

    model_config = ConfigDict(extra="allow")
    name: str
    passed: bool
    why: str | None = None


class Candidate(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    text: str
    finish_reason: FinishReason | None = None
    num_tokens: int | None = None
    cumulative_logprob: float | None = None
    seed: int | None = None
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None  # `sample --logprobs`: one per token id, 2 decimals
    degeneration: Degeneration | None = None
    fidelity: dict[str, float] | None = None
    judge: dict[str, Any] | None = None
    omission: Omission | None = None
    checks: list[CheckResult] | None = None

    @property
    def failed_checks(self) -> list[str]:
        if not self.checks:  # the common case, asked several times per candidate by `pair`
            return []
        return [c.name for c in self.checks if not c.passed]


class CandidateRecord(_Prompted):
    """Sample output: one line per document holding its K candidates."""

    model: str | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    candidates: list[Candidate]
    # written by `sample` in this order, after the fields above
    backend: str | None = None
    prompt_tokens: int | None = None
    rendered_prompt: str | None = None  # the prompt as the model saw it, where a chat template made it
    max_tokens: int | None = None  # capped by the model's context
    error: str | None = None  # why the document has no candidates

    @model_validator(mode="after")
    def _unique_indices(self):
        """A pair names its sides by index: two candidates with one index would make that ambiguous."""
        seen: set[int] = set()
        for position, cand in enumerate(self.candidates):
            if cand.index in seen:
                raise ValueError(f"candidates[{position}].index {cand.index} repeats")
            seen.add(cand.index)
        return self


class SideScores(BaseModel):
    """What `pair` knew about one side of a pair, and what `train` reads back: the verdict, how the text
    ended, where a loop starts and how long its unit is (for loop-aware truncation), CER, judge score.

    A field is written only when it was set (``None`` included), so the file keeps the exact keys the
    writer chose. To carry a new candidate annotation into pairs, declare it here under the candidate's
    own field name: :meth:`of` copies same-named candidate fields.
    """

    model_config = ConfigDict(extra="allow")
    verdict: Literal["degenerate", "suspect", "clean"] | None = None
    finish_reason: FinishReason | None = None
    kind: str | None = None
    severity: float | None = None
    start_char: int | None = None  # where the loop starts, in characters of the side's text
    copies: float | None = None
    unit_len: int | None = None  # the loop unit's length, in characters
    failed_checks: list[str] | None = None  # names of the `score --check` checks the side fails
    fidelity: dict[str, float] | None = None  # cer, wer, similarity, bleu4, composite, coverage
    omission: dict[str, Any] | None = None  # the candidate's omission: {verdict, coverage, length_ratio, why, source}
    judge: dict[str, Any] | None = None  # {score, criteria}

    @model_serializer
    def _only_set(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}
        return fields | (self.model_extra or {})

    @classmethod
    def of(cls, cand: Candidate) -> SideScores:
        return cls.model_construct(**cls.fields_of(cand))  # every value comes from a validated candidate

    @classmethod
    def fields_of(cls, cand: Candidate) -> dict[str, Any]:
        """The fields :meth:`of` sets, in field order: what the model dumps (`pair` writes this dict)."""
        deg = cand.degeneration
        fields: dict[str, Any] = {"verdict": deg.verdict if deg else "clean", "finish_reason": cand.finish_reason}
        if deg is not None and deg.verdict != "clean":
            fields |= {"kind": deg.kind, "severity": deg.severity, "start_char": deg.start_char,
                       "copies": deg.copies, "unit_len": len(deg.unit) if deg.unit else None}
        if cand.failed_checks:
            fields["failed_checks"] = cand.failed_checks
        if cand.fidelity:
            fields["fidelity"] = cand.fidelity
        if cand.omission is not None:
            fields["omission"] = cand.omission.model_dump(exclude_none=True)
        if cand.judge and cand.judge.get("score") is not None:
            fields["judge"] = {"score": cand.judge["score"], "criteria": cand.judge.get("criteria")}
        copied = [name for name in _COPIED if getattr(cand, name, None) is not None and name not in fields]
        if copied:  # same-named candidate fields, then everything back in field order
            fields |= {name: getattr(cand, name) for name in copied}
            fields = {name: fields[name] for name in cls.model_fields if name in fields}
        return fields

    @classmethod
    def of_reference(cls) -> SideScores:
        return cls(verdict="clean", fidelity={"cer": 0.0})

    @property
    def ended(self) -> bool:
        """The text ended on its own (an end-of-turn token belongs after it); unknown counts as ended."""
        return self.finish_reason not in CUT_OFF

    @property
    def cer(self) -> float | None:
        return self.fidelity.get("cer") if self.fidelity else None

    def loop_end(self, max_copies: int) -> int | None:
        """Character where the loop's onset plus up to ``max_copies`` copies end; None without a loop."""
        if self.start_char is None or not self.unit_len:
            return None
        return int(self.start_char + min(self.copies or max_copies, max_copies) * self.unit_len)


# SideScores.of computes these; the other fields it copies from the candidate's field of that name
_DERIVED = {"kind", "severity", "start_char", "copies", "unit_len", "failed_checks", "judge", "omission"}
_COPIED = tuple(name for name in SideScores.model_fields if name not in _DERIVED)


class Pair(BaseModel):
    """One line of a pairs file: TRL's ``prompt``/``chosen``/``rejected`` (all strings, or all message
    lists) plus dpominer's provenance. `pair` writes every provenance field; `train` reads any TRL
    preference row, so they are optional here."""

    model_config = ConfigDict(extra="allow")
    prompt: str | list[Message]
    chosen: str | list[Message]
    rejected: str | list[Message]
    images: list[ImageRef] | None = None  # TRL's VLM column: paths / {"pdf", "page"} from the pairs file's folder
    id: str | None = None
    reason: str | None = None
    chosen_source: Literal["candidate", "reference"] | None = None
    chosen_index: int | None = None
    rejected_index: int | None = None
    chosen_scores: SideScores = Field(default_factory=SideScores)
    rejected_scores: SideScores = Field(default_factory=SideScores)
    # what was sampled, so training uses exactly those tokens (absent: train tokenises the text)
    rendered_prompt: str | None = None
    chosen_token_ids: list[int] | None = None
    rejected_token_ids: list[int] | None = None

    @model_validator(mode="after")
    def _same_form(self):
        forms = {isinstance(v, str) for v in (self.prompt, self.chosen, self.rejected)}
        if len(forms) > 1:
            raise ValueError("prompt, chosen and rejected must all be strings or all be message lists")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("'prompt' is an empty message list")
        if self.images:
            if not self.conversational:
                raise ValueError("'images' need a conversational prompt with {\"type\": \"image\"} parts")
            parts = sum(m.image_parts for m in self.prompt)  # type: ignore[union-attr]
            if parts != len(self.images):
                raise ValueError(f"{parts} image content part(s) in 'prompt' but {len(self.images)} in 'images'")
        return self

    @field_validator("images", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        return _image_refs(value)

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)

    def scores(self, side: str) -> SideScores:
        return self.chosen_scores if side == "chosen" else self.rejected_scores
