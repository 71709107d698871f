"""How real_smollm2_v2.jsonl was generated: `dpominer sample`'s own code (vLLM on CPU, one engine for
every temperature), one candidate per document and temperature, token ids and per-token log-probs
kept. Labels were then given by hand, reading every output (label + reason per item).

    nice -n 10 python bench/data/generate_v2.py MODEL docs.jsonl OUT_DIR [--temps 0,0.3,0.6,1.0,1.2] [--seed 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dpominer.backends import SamplingSpec, make_backend
from dpominer.partial import PartialOutput
from dpominer.sample import SampleConfig, resume_settings, run_sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("docs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--temps", default="0,0.3,0.6,1.0,1.2")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--backend", default="vllm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk-size", type=int, default=47, help="documents per engine call (and per flush)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    engine = None
    for temp in (float(t) for t in args.temps.split(",")):
        spec = SamplingSpec(n=1, temperature=temp, max_tokens=args.max_tokens, seed=args.seed, logprobs=True)
        cfg = SampleConfig(model=args.model, backend=args.backend, sampling=spec, chunk_size=args.chunk_size,
                           max_model_len=1024)
        engine = engine or make_backend(cfg)
        out = args.out / f"t{temp}.jsonl"
        if out.exists():
            continue
        partial = PartialOutput(out, resume_settings(cfg))
        done = partial.start(resume=True)  # keeps the records of a killed run
        start = time.perf_counter()
        summary = run_sample(args.docs, partial, cfg, engine, done=done)
        print(f"T={temp}: {summary.candidates} candidates, {summary.tokens} tokens, "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
