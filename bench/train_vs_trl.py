"""`dpominer train` against TRL 1.16's `DPOTrainer`: same model, pairs and settings, in one run.

    python bench/train_vs_trl.py [--model smollm2-135m-instruct] [--pairs 16] [--batch-size 2]

Pairs: real SmolLM2 candidates (examples/candidates.jsonl) paired by `dpominer pair`. Each trainer runs
in its own process (peak RSS is the process's own), one epoch over the same pairs with the same batch
size, max length, β, learning rate and threads; our reference log-probs are computed in the timed run
(empty cache). Prints wall time, useful (non-padding) tokens per second and peak RSS, with ratios.

Loss parity: a policy made by nudging the weights (so it differs from the reference), the same batch
of pairs, TRL's loss from its own collator and `_compute_loss` vs ours from our tokeniser, collator,
completion log-probs and `dpo_loss`. The pairs are given without provenance here, so both sides end
with the end-of-turn token as TRL tokenises them.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_pairs(path: Path, count: int, provenance: bool = True) -> Path:
    from dpominer.mining import PairRunConfig, run_pair

    full = path.with_suffix(".all.jsonl")
    run_pair(ROOT / "examples" / "candidates.jsonl", full, PairRunConfig())
    rows = [json.loads(line) for line in full.open()][:count]
    keep = ("prompt", "chosen", "rejected") + (("id", "chosen_scores", "rejected_scores") if provenance else ())
    path.write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n" for r in rows))
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args) -> dict:
    import os

    os.environ["DPOMINER_CACHE"] = args.cache  # empty for "ours": the reference pass is part of the timed run
    from dpominer.train.config import TrainConfig
    from dpominer.train.loop import train

    cfg = TrainConfig(model=args.model, batch_size=args.batch_size, max_length=args.max_length, beta=0.1,
                      lr=1e-6, epochs=1, warmup_ratio=0.0, save_every=0, threads=args.threads,
                      rejected_loop_copies=0)  # the same tokens TRL trains on: rejected loops kept whole
    start = time.perf_counter()
    summary = train(Path(args.pairs_file), Path(tempfile.mkdtemp()) / "out", cfg)
    return {"seconds": time.perf_counter() - start, "steps": summary.steps, "tokens": summary.tokens}


def run_trl(args, precompute: bool) -> dict:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dpominer.models import resolve_model

    torch.set_num_threads(args.threads)
    path = resolve_model(args.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_dataset("json", data_files=args.pairs_file, split="train")
    config = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size,
                       num_train_epochs=1, learning_rate=1e-6, max_length=args.max_length, beta=0.1,
                       logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                       precompute_ref_log_probs=precompute, warmup_steps=0, bf16=False,
                       dataloader_num_workers=0, disable_tqdm=True)
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    result = trainer.train()
    return {"seconds": time.perf_counter() - start, "steps": result.global_step}


def parity(args) -> tuple[float, float]:
    """(TRL loss, our loss) on one batch, with a policy that differs from the reference."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from dpominer.models import resolve_model
    from dpominer.train.data import PreferenceRecord, collate, tokenize_pair
    from dpominer.train.logps import CompletionLogps
    from dpominer.train.loss import dpo_loss

    path = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 2e-3)
    pairs = make_pairs(Path(tempfile.mkdtemp()) / "plain.jsonl", args.batch_size, provenance=False)
    data = load_dataset("json", data_files=str(pairs), split="train")
    # bf16=False matters: left to default, accelerate wraps the *reference* forward in bf16 autocast on CPU
    config = DPOConfig(output_dir=tempfile.mkdtemp(), max_length=None, beta=0.1, report_to=[], use_cpu=True,
                       bf16=False)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=data, processing_class=tokenizer)
    with torch.no_grad():
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.batch_size)])
        trl_loss = float(trainer._compute_loss(trainer.model, batch, return_outputs=False))
        records = [PreferenceRecord.model_validate(json.loads(line)) for line in pairs.open()]
        ours = collate([tokenize_pair(r, tokenizer, loop_copies=4) for r in records], tokenizer.pad_token_id)
        n = len(records)
        pol, _ = CompletionLogps(trainer.model)(**ours)
        ref_sums, _ = CompletionLogps(ref)(**ours)
        losses, _, _ = dpo_loss(pol[:n], pol[n:], ref_sums[:n], ref_sums[n:], beta=0.1)
    return trl_loss, float(losses.mean())


def child(args) -> None:
    if args.child.startswith("ours"):
        result = run_ours(args)
    else:
        result = run_trl(args, precompute=args.child == "trl-precompute")
    result["peak_rss_mib"] = peak_rss_mib()
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "ours-cached", "trl", "trl-precompute"])
    parser.add_argument("--cache", help="DPOMINER_CACHE of the child")
    parser.add_argument("--pairs-file")
    parser.add_argument("--parity-only", action="store_true", help="only the loss comparison")
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.parity_only:
        return print_parity(args)

    from dpominer.models import resolve_model

    # a path, so that the children's DPOMINER_CACHE (the reference cache) never triggers a re-conversion
    args.model = resolve_model(args.model)
    pairs = make_pairs(Path(tempfile.mkdtemp()) / "pairs.jsonl", args.pairs)
    results = {}
    cache = tempfile.mkdtemp()  # "ours" fills it, "ours-cached" (a second run: another β, say) reads it
    for name in ("ours", "ours-cached", "trl", "trl-precompute"):
        cmd = [sys.executable, __file__, "--child", name, "--pairs-file", str(pairs), "--model", args.model,
               "--cache", cache,
               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[0][7:])
    tokens = results["ours"]["tokens"]  # the same pairs, one epoch: the same useful tokens for every trainer
    print(f"model {Path(args.model).name}, {args.pairs} real pairs, batch {args.batch_size}, "
          f"max_length {args.max_length}, {args.threads} threads, 1 epoch ({results['ours']['steps']} steps), "
          f"{tokens} non-padding tokens")
    print(f"{'trainer':<28}{'wall s':>9}{'tokens/s':>10}{'peak RSS MiB':>14}{'speed ×':>9}{'RSS ×':>8}")
    for name, label in (("ours", "dpominer train"), ("ours-cached", "dpominer train, ref cached"),
                        ("trl", "TRL DPOTrainer (ref model)"), ("trl-precompute", "TRL DPOTrainer (precompute)")):
        r, ours = results[name], results["ours"]
        print(f"{label:<28}{r['seconds']:>9.1f}{tokens / r['seconds']:>10.0f}{r['peak_rss_mib']:>14.0f}"
              f"{r['seconds'] / ours['seconds']:>9.2f}{r['peak_rss_mib'] / ours['peak_rss_mib']:>8.2f}")
    print("(speed × = that trainer's wall time ÷ ours: >1 means ours is faster; RSS × = its peak ÷ ours)")
    print_parity(args)


def print_parity(args) -> None:
    trl_loss, our_loss = parity(args)
    print(f"loss parity on one batch ({args.batch_size} pairs, nudged policy vs reference): TRL {trl_loss:.6f} "
          f"ours {our_loss:.6f} |Δ| {abs(trl_loss - our_loss):.2e}")


if __name__ == "__main__":
    main()
