"""transformers `generate` backend: the embedded default on machines without vLLM (CPU laptops).

Documents are generated one at a time (all n candidates of a document in one batch), with torch's
RNG seeded from the document's seed: a document's candidates then depend only on its id and the
base seed, not on which documents were generated before it — what makes `--resume` exact.
"""

from __future__ import annotations

from .. import __version__, multimodal
from . import Completion, LoopStop, Request, SamplingSpec


class LoopStopper:
    """StoppingCriteria: marks rows whose generated tail repeats (see LoopStop) and stops them."""

    def __init__(self, prompt_len: int, rule: LoopStop, eos_ids: set[int], every: int = 4):
        self.prompt_len, self.rule, self.eos_ids, self.every = prompt_len, rule, eos_ids, every
        self.stopped: set[int] = set()
        self.steps = 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.steps += 1
        if self.steps % self.every == 0:  # checking every few steps is as good and costs less
            for row, ids in enumerate(input_ids[:, self.prompt_len :].tolist()):
                # rows that ended on EOS are padded; their padding is no loop
                if row not in self.stopped and self.eos_ids.isdisjoint(ids) and self.rule.matches(ids):
                    self.stopped.add(row)
        rows = range(input_ids.shape[0])
        return torch.tensor([row in self.stopped for row in rows], dtype=torch.bool, device=input_ids.device)


class HFBackend:
    name = "hf"

    def __init__(self, model: str, *, dtype: str = "auto", device: str | None = None, threads: int | None = None,
                 trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own bar is the one to watch
        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = dtype
        self.processor = None  # a vision-language model's processor (None: a text model)
        if multimodal.is_vision_model(model, trust_remote_code):
            self.processor = multimodal.load_processor(model, trust_remote_code)
            self.tokenizer = self.processor.tokenizer
            self.model = multimodal.load_model(model, getattr(torch, dtype), trust_remote_code)
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype),
                                                              trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids))
        self.threads = torch.get_num_threads()

    def max_context(self) -> int | None:
        return getattr(self.model.config.get_text_config(), "max_position_embeddings", None)

    def describe(self) -> dict:
        return {"backend": self.name, "device": self.device, "dtype": self.dtype, "threads": self.threads,
                "seed_scope": "document: torch is seeded with candidate 0's seed, all n sampled in one batch",
                "dpominer": __version__}

    def generate(self, requests: list[Request], spec: SamplingSpec) -> list[list[Completion]]:
        return [self._one(request, spec) for request in requests]

    def _one(self, request: Request, spec: SamplingSpec) -> list[Completion]:
        import torch
        from transformers import StoppingCriteriaList

        assert request.prompt_ids is not None
        greedy = spec.temperature == 0
        rows = 1 if greedy else len(request.seeds)  # greedy candidates are identical: decode once
        prompt = torch.tensor([request.prompt_ids] * rows, device=self.device)
        extra = {}
        if request.images:
            # each row gets its own copy of the images: right for every family (the generic expansion of
            # num_return_sequences would interleave a multi-image document's images wrongly)
            enc = self.processor(text=[request.prompt_text] * rows, images=[request.images] * rows,
                                 return_tensors="pt", add_special_tokens=False)
            if enc["input_ids"][0].tolist() != request.prompt_ids:
                raise RuntimeError(f"{request.doc_id}: the processor expanded the prompt differently twice")
            extra = {k: v.to(self.device) for k, v in enc.items() if k not in multimodal.TEXT_KEYS}
            if "pixel_values" in extra and extra["pixel_values"].is_floating_point():
                extra["pixel_values"] = extra["pixel_values"].to(self.model.dtype)
        stopper = LoopStopper(prompt.shape[1], spec.loop_stop, self.eos_ids) if spec.stop_on_loop else None
        sampling = {} if greedy else dict(do_sample=True, temperature=spec.temperature, top_p=spec.top_p,
                                           top_k=spec.top_k if spec.top_k > 0 else 0)
        torch.manual_seed(request.seeds[0])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=request.max_tokens,
                pad_token_id=self.pad_id, **extra,
                stopping_criteria=StoppingCriteriaList([stopper]) if stopper else None, **sampling)
        completions = []
        for row, generated in enumerate(out[:, prompt.shape[1] :].tolist()):
            ids, finish = [], "length"
            for token in generated:
                if token in self.eos_ids:
                    finish = "stop"
                    break
                ids.append(token)
            if stopper is not None and row in stopper.stopped:
                finish = "repetition"  # flagged before any EOS: what follows the loop is padding
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            completions.append(Completion(text=text, finish_reason=finish, token_ids=ids, seed=request.seeds[0]))
        if spec.logprobs and not request.images:  # the re-scoring pass is text-only: no log-probs for images yet
            self._add_logprobs(request.prompt_ids, completions)
        if greedy:
            completions = [Completion(c.text, c.finish_reason, c.token_ids, c.cumulative_logprob, request.seeds[0],
                                      token_logprobs=c.token_logprobs) for c in completions * len(request.seeds)]
        return completions

    def _add_logprobs(self, prompt_ids: list[int], completions: list[Completion]) -> None:
        """Each generated token's log-prob under the model (raw logits, as vLLM reports them), from
        one forward pass per candidate after generation: `generate`'s own scores are temperature-warped
        and would hold a (steps, vocab) tensor per row."""
        import torch

        for comp in completions:
            ids = comp.token_ids or []
            if not ids:
                comp.token_logprobs, comp.cumulative_logprob = [], 0.0
                continue
            full = torch.tensor([prompt_ids + ids], device=self.device)
            with torch.inference_mode():
                logits = self.model(full).logits[0, len(prompt_ids) - 1 : -1].float()  # (T, V)
            logps = torch.log_softmax(logits, dim=-1).gather(1, full[0, len(prompt_ids) :, None])[:, 0]  # (T,)
            comp.token_logprobs = logps.tolist()
            comp.cumulative_logprob = float(logps.sum())
