"""Any OpenAI-compatible server (`vllm serve`, SGLang, TGI, …): /v1/completions for prompt documents,
/v1/chat/completions for message documents (the server applies the chat template).

Requests run concurrently (a thread pool), retry with exponential backoff on 429, 5xx and
connection errors, and time out. A request that still fails marks its completions ``failed``: `sample`
and `score --judge` then stop (exit 1) with their partial file kept, never writing the failure as data.
One request asks for all n candidates of a document; a server that
returns fewer (llama.cpp's ignores n) gets the rest as single-candidate requests, each with its own
seed, and is remembered as such.
"""

from __future__ import annotations

import json
import os
import random
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ..jsonl import InputError
from . import Completion, Request, SamplingSpec

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackend:
    name = "openai"
    tokenizer = None  # the server tokenises

    def __init__(self, model: str, *, base_url: str, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 600.0, max_retries: int = 5):
        self.model, self.base_url = model, base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.api_key = api_key or os.environ.get("DPOMINER_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.concurrency, self.timeout, self.max_retries = concurrency, timeout, max_retries
        self.n_supported: bool | None = None  # learnt from the first answers

    def max_context(self) -> int | None:
        return None  # the server rejects over-long prompts itself; that is recorded per document

    def describe(self) -> dict:
        return {"backend": self.name, "base_url": self.base_url, "served_model": self.model,
                "concurrency": self.concurrency, "n_supported": self.n_supported,
                "seed_scope": "document (one request with n and candidate 0's seed); per candidate when n is ignored"}

    # ------------------------------------------------------------------------------------------ HTTP

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise RuntimeError(f"HTTP {exc.code} from {self.base_url + path}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self.max_retries:
                    raise RuntimeError(f"cannot reach {self.base_url + path}: {exc}") from None
            time.sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random()))  # backoff with jitter
        raise AssertionError("unreachable")

    def _ask(self, request: Request, spec: SamplingSpec, n: int, seed: int) -> list[Completion]:
        body = {"model": self.model, "n": n, "temperature": spec.temperature, "top_p": spec.top_p,
                "max_tokens": request.max_tokens, "seed": seed}
        if spec.json_schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "answer", "schema": spec.json_schema}}
        if request.messages is not None:
            messages = chat_messages(request.messages, request.images) if request.images else request.messages
            body |= {"messages": messages, "logprobs": True, "top_logprobs": 0}
            answer = self._post("/chat/completions", body)
        else:
            body |= {"prompt": request.prompt_text, "logprobs": 0}
            answer = self._post("/completions", body)
        return [_completion(choice, seed) for choice in answer.get("choices", [])]

    # ------------------------------------------------------------------------------------------ API

    def _one(self, request: Request, spec: SamplingSpec) -> list[Completion]:
        want = len(request.seeds)
        try:
            got = [] if self.n_supported is False else self._ask(request, spec, want, request.seeds[0])[:want]
            if self.n_supported is None and want > 1:
                self.n_supported = len(got) == want
            for seed in request.seeds[len(got) :]:  # a server that ignored n: one request per candidate
                got += self._ask(request, spec, 1, seed)[:1]
            return got
        except RuntimeError as exc:  # after the retries: the run stops, and --resume asks again
            return [Completion(text="", finish_reason="error", seed=seed, extra={"error": str(exc), "failed": str(exc)})
                    for seed in request.seeds]

    def generate(self, requests: list[Request], spec: SamplingSpec) -> list[list[Completion]]:
        if spec.stop_on_loop:
            raise InputError("--stop-on-loop: not available with --backend openai (use vllm or hf)")
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda r: self._one(r, spec), requests))


def chat_messages(messages: list[dict], images: list) -> list[dict]:
    """Messages in the OpenAI chat form, each ``{"type": "image"}`` part replaced by the next image as an
    ``image_url`` part holding a base64 PNG data URL (servers cannot read the client's files)."""
    from ..images import data_url

    pictures = iter(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{"type": "image_url", "image_url": {"url": data_url(next(pictures))}}
                       if part["type"] == "image" else {"type": "text", "text": part["text"]} for part in content]
        out.append({**message, "content": content})
    return out


def _completion(choice: dict, seed: int) -> Completion:
    text = choice.get("text")
    if text is None:
        text = (choice.get("message") or {}).get("content") or ""
    finish = choice.get("finish_reason")
    finish = finish if finish in ("stop", "length", "repetition") else ("stop" if finish is None else "error")
    logprobs, tokens = choice.get("logprobs") or {}, None
    if "content" in logprobs and logprobs["content"] is not None:  # chat form
        tokens = [entry.get("logprob") for entry in logprobs["content"]]
    elif logprobs.get("token_logprobs") is not None:  # completions form
        tokens = logprobs["token_logprobs"]
    cumulative = sum(lp for lp in tokens if lp is not None) if tokens else None
    return Completion(text=text, finish_reason=finish, cumulative_logprob=cumulative, seed=seed,
                      extra={"num_tokens": len(tokens)} if tokens is not None else {},
                      token_logprobs=[lp if lp is not None else 0.0 for lp in tokens] if tokens else None)
