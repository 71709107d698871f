"""`dpominer train --plan`'s memory formula against the measured peak of a real training step on the CPU.

    python bench/train_memory.py [--model tiny --model smollm2-135m-instruct] [--batch-size 2] [--max-length 256]
    torchrun --nproc-per-node 2 bench/train_memory.py      # FSDP: each process's peak against the FSDP column

For each model, fp32, one process (what DDP holds on each GPU): one optimizer step — forward and backward of
one micro-batch of full-length rows (what the plan assumes: every row padded to --max-length), AdamW step
— with and without gradient checkpointing; the second step is measured (the first allocates AdamW's moments).
Measured: the weights and AdamW moments alive before, plus the peak of the running sum of torch's CPU
allocations and frees during the step (the profiler's allocator events, in time order). Estimated:
``plan.estimate``. Prints both and measured/estimate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MIB = 1 << 20


def peak_step_bytes(model_dir: str, batch_size: int, max_length: int, checkpointing: bool, fsdp: bool) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from dpominer.train import dist
    from dpominer.train.config import TrainConfig
    from dpominer.train.fsdp import shard
    from dpominer.train.logps import CompletionLogps
    from dpominer.train.model import _load

    torch.manual_seed(0)
    cfg = TrainConfig(model=model_dir, fsdp=fsdp)
    policy = _load(model_dir, cfg)
    if checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.config.use_cache = False
    policy.train()
    logps = CompletionLogps(policy, padding_free=False)  # one padded call, as on a GPU
    if fsdp:
        shard(logps, policy, cfg, dist.setup(always=True))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    rows, prompt = 2 * batch_size, 8
    input_ids = torch.randint(0, policy.config.vocab_size, (rows, max_length))
    labels = input_ids.clone()
    labels[:, :prompt] = -100
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}

    def step() -> None:
        sums, counts = logps(**batch)
        (-(sums / counts).mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # the first step allocates AdamW's moments; the second is what every later step costs
    alive = list(policy.parameters()) + [t for s in optimizer.state.values() for t in s.values() if t.dim()]
    before = sum(_local(t).numel() * t.element_size() for t in alive)  # this process's shards under FSDP
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return before + peak


def _local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="tiny (built here) or a model; repeat")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    from dpominer.train.config import TrainConfig
    from dpominer.train.plan import estimate, model_size

    world = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun: FSDP, each process reports its own peak
    way = f"FSDP, {world} processes (process {os.environ['RANK']})" if world > 1 else "1 process"
    print(f"fp32, {way}, batch {args.batch_size} pairs × 2 rows × {args.max_length} tokens; MiB")
    print(f"{'model':<24} {'checkpointing':<14} {'estimate':>10} {'measured':>10} {'measured/estimate':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model or ["tiny", "smollm2-135m-instruct"]:
            model = name
            if name == "tiny":
                from conftest import build_tiny_model

                model = str(build_tiny_model(Path(tmp) / "tiny", max_positions=max(256, args.max_length)))
            cfg = TrainConfig(model=model, batch_size=args.batch_size, max_length=args.max_length)
            size = model_size(cfg)
            memory = estimate(size, cfg, gpus=world, fsdp=world > 1, bf16=False)
            if name != "tiny":
                from dpominer.models import resolve_model

                model = resolve_model(model)
            for checkpointing in (False, True):
                measured = peak_step_bytes(model, args.batch_size, args.max_length, checkpointing, world > 1)
                expected = memory.total(checkpointing)
                print(f"{name:<24} {'yes' if checkpointing else 'no':<14} {expected / MIB:>10.1f} "
                      f"{measured / MIB:>10.1f} {measured / expected:>18.2f}")


if __name__ == "__main__":
    main()
