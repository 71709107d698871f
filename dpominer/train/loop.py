"""`dpominer train`: DPO on preference pairs, in one readable loop (no Trainer, no callbacks).

Phases, one function each, read top to bottom in :func:`train`: ``setup`` (read and tokenise the pairs,
load the policy — LoRA optional, DDP-wrapped or FSDP-sharded under torchrun — optimizer, schedule; the
:class:`~.state.Run` every phase works with) → ``reference.prepare`` (log-probs precomputed and cached, or
a live reference) → ``checkpoint.restore`` (--resume) → ``_loop``: for each optimizer step ``train_step``
(learning rate, forward/backward over the micro-batches, clip, step), then log, eval,
``checkpoint.save_run`` → ``_publish`` (write the model).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path

import orjson
import torch

from ..guard import WriteError, check_write
from ..jsonl import InputError, iter_jsonl
from ..records import Pair
from . import checkpoint, dist, fsdp, plan, reference
from .config import TrainConfig
from .data import (
    Example,
    PairCheck,
    collate,
    data_digest,
    in_eval_split,
    length_grouped_batches,
    to_device,
    tokenize_pair,
    truncate,
)
from .loss import dpo_loss
from .model import autocast_for, build_policy, load_image_processor, load_tokenizer
from .state import Events, Run, TrainSummary
from .vision import tokenize_image_pair


class TrainingStopped(InputError):
    """Training cannot go on (non-finite loss or gradient); the message says where it stopped. Reported as
    bad input is: one line, exit code 1."""


def read_examples(pairs: Path, tokenizer, cfg: TrainConfig, skip_invalid: bool,
                  summary: TrainSummary, processor=None) -> tuple[list[Example], list[Example]]:
    """Validate every pair (see :class:`PairCheck`) and tokenise it, before the model is loaded.

    A bad pair stops the run naming ``pairs:LINE``; ``skip_invalid`` drops it and counts it by reason."""
    checker = PairCheck()

    def check(record: Pair) -> None:  # ValueError → "pairs:LINE: why"
        checker(record)
        if record.images:
            if processor is None:
                raise ValueError(f"--model {cfg.model} takes no images (it has no image processor)")
            examples.append(tokenize_image_pair(record, processor, base=pairs.parent, dpi=cfg.dpi,
                                                loop_copies=cfg.loop_copies))
            return
        examples.append(tokenize_pair(record, tokenizer, loop_copies=cfg.loop_copies,
                                      separate=cfg.tokenize_separately,
                                      rejected_loop_copies=cfg.rejected_loop_copies or None))

    def skipped(message: str) -> None:
        reason = checker.reason or "invalid_line"
        summary.skipped[reason] = summary.skipped.get(reason, 0) + 1

    examples: list[Example] = []
    for _ in iter_jsonl(pairs, Pair, skip_invalid=skip_invalid, unique_ids=False, check=check,
                        on_line=checker.line, on_skip=skipped):
        summary.pairs_read += 1
    for source in (s for e in examples for s in e.sources.values()):
        if source == "sampled":
            summary.sides_sampled += 1
        else:
            summary.sides_tokenized[source] = summary.sides_tokenized.get(source, 0) + 1
    summary.truncation.rejected_loops_cut = sum(e.rejected_cut_tokens > 0 for e in examples)
    fitted = [f for f in (truncate(e, cfg.max_length, cfg.max_prompt_length, summary.truncation) for e in examples)
              if f is not None]
    train = [e for e in fitted if not in_eval_split(e.key, cfg.eval_fraction)]
    held = [e for e in fitted if in_eval_split(e.key, cfg.eval_fraction)]
    if not train:
        raise InputError(f"{pairs}: no pair left to train on after truncation and the eval split "
                         f"({summary.truncation.dropped or 'none dropped'}; skipped {summary.skipped or 'none'})")
    summary.train_pairs, summary.eval_pairs = len(train), len(held)
    return train, held


def pair_metrics(sums: torch.Tensor, counts: torch.Tensor, ref_sums: torch.Tensor,
                 cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a micro-batch and its metrics. sums/counts (2B,) policy; ref_sums (B, 2)."""
    n = sums.shape[0] // 2
    counts = counts.clamp(min=1).float()
    policy = sums / counts if cfg.length_normalize else sums
    ref = ref_sums.T.reshape(-1) / counts if cfg.length_normalize else ref_sums.T.reshape(-1)  # (2B,)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy[:n], policy[n:], ref[:n], ref[n:], beta=cfg.beta, loss_type=cfg.loss_type,
        label_smoothing=cfg.label_smoothing, length_penalty=cfg.length_penalty,
        chosen_lengths=counts[:n], rejected_lengths=counts[n:])
    loss = losses.mean()
    metrics = {"dpo_loss": loss.item()}
    if cfg.sft_weight:
        nll = -(sums[:n] / counts[:n]).mean()  # per-token NLL of the chosen side (Pang et al. 2024, RPO)
        loss = loss + cfg.sft_weight * nll
        metrics["sft_nll"] = nll.item()
    metrics.update({
        "loss": loss.item(),
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": policy[:n].detach().mean().item(),
        "logps/rejected": policy[n:].detach().mean().item(),
        "length/chosen": counts[:n].mean().item(),
        "length/rejected": counts[n:].mean().item(),
    })
    return loss, metrics


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _average(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys()
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


@torch.no_grad()
def evaluate(logps_fn, examples: list[Example], ref: torch.Tensor, cfg: TrainConfig, pad_id: int,
             world: dist.World, autocast) -> dict[str, float]:
    rows = []
    starts: list[int | None] = list(range(world.rank * cfg.batch_size, len(examples), cfg.batch_size * world.size))
    if cfg.fsdp:  # every forward is a collective: a process with fewer batches makes filler calls
        starts += [None] * (-(-len(examples) // (cfg.batch_size * world.size)) - len(starts))
    for start in starts:
        chunk = examples[start:start + cfg.batch_size] if start is not None else examples[:cfg.batch_size]
        batch = to_device(collate(chunk, pad_id), world.device)
        with autocast or nullcontext():
            sums, counts = logps_fn(**batch)
        if start is None:
            continue
        _, metrics = pair_metrics(sums.float(), counts, ref[start:start + len(chunk)].to(world.device), cfg)
        rows.append(metrics)
    merged = [r for part in dist.gather(world, rows) for r in part]
    return {f"eval/{k}": v for k, v in _average(merged).items()}


def train(pairs: Path, output: Path, cfg: TrainConfig, *, resume: bool = False, skip_invalid: bool = False,
          on_event: Events | None = None, gpu_memory: float | None = None) -> TrainSummary:
    """``gpu_memory`` (GiB; default: the GPU's own): refuse before any work when weights, gradients, optimizer
    state and reference cannot fit, whatever the batch."""
    emit = on_event or (lambda kind, data: None)
    count, memory, bf16 = plan.runtime_gpus(cfg, None, gpu_memory)
    if memory is not None and (why := plan.static_misfit(plan.make_plan(cfg, count, memory, bf16), cfg.fsdp)):
        raise InputError(why)
    if cfg.fsdp and not dist.launched():
        raise InputError(f"--fsdp shards the model over processes that torchrun starts: {dist.LAUNCH} --fsdp")
    world = dist.setup(always=cfg.fsdp)
    try:
        started = time.perf_counter()
        run = setup(pairs, output, cfg, world, resume, skip_invalid, emit)
        reference.prepare(run)
        start_step = checkpoint.restore(run) if resume and run.last is not None else 0
        output.mkdir(parents=True, exist_ok=True)
        emit("start", {"total": run.total, "start": start_step, "steps_per_epoch": run.steps_per_epoch})
        _loop(run, start_step)
        _publish(run)
        run.summary.seconds = round(time.perf_counter() - started, 2)
        return run.summary
    finally:
        dist.teardown(world)


def setup(pairs: Path, output: Path, cfg: TrainConfig, world: dist.World, resume: bool, skip_invalid: bool,
          emit: Events) -> Run:
    """Check the output folder, read the pairs, load the policy, build the optimizer and the schedule."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    last = checkpoint.check_output(output, resume)
    summary = TrainSummary()
    tokenizer, model_dir = load_tokenizer(cfg)
    processor = load_image_processor(cfg, model_dir)  # a VLM's: renders image pairs, is saved with the model
    train_set, eval_set = read_examples(pairs, tokenizer, cfg, skip_invalid, summary, processor)
    emit("data", summary.as_dict())
    policy, logps_fn, train_fn = build_policy(cfg, model_dir, world, resume_from=last if resume else None)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lengths = [e.length() for e in train_set]
    n_micro = len(length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0))
    steps_per_epoch = math.ceil(n_micro / (cfg.grad_accum * world.size))  # micro-batches per step, all processes
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return Run(cfg, world, output, emit, summary, last, tokenizer, processor, model_dir, train_set, eval_set,
               data_digest(train_set + eval_set), autocast_for(cfg, world.device), policy, logps_fn, train_fn,
               optimizer, trainable, lengths, steps_per_epoch, total, int(cfg.warmup_ratio * total))


def train_step(run: Run, step: int, micro_batches: list[list[int]]) -> dict[str, float]:
    """One optimizer step over this process's micro-batches: forward, backward, clip, step. Its metrics
    (this process's mean over its micro-batches, and the tokens it saw)."""
    cfg, world = run.cfg, run.world
    lr = lr_at(step, run.total, run.warmup, cfg.learning_rate)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    rows, tokens = [], 0
    for micro, idx in enumerate(micro_batches):
        batch = to_device(collate([run.train_set[i] for i in idx], run.pad_id), world.device)
        tokens += int(batch["attention_mask"].sum())
        # gradients are all-reduced on the last micro-batch's backward only
        dist.set_grad_sync(run.train_fn, micro == len(micro_batches) - 1)
        with run.autocast or nullcontext():
            sums, counts = run.train_fn(**batch)  # (2B,)
            if run.live_ref is not None:
                ref_sums = torch.stack(run.live_ref(**batch)[0].float().detach().split(len(idx)), 1)  # (B, 2)
            else:
                ref_sums = run.ref_values[idx].to(world.device)
        loss, metrics = pair_metrics(sums.float(), counts, ref_sums, cfg)
        if dist.any_rank(world, not torch.isfinite(loss).item()):
            raise TrainingStopped(_stopped(step, f"the loss is {loss.item()}", run.output))
        (loss / len(micro_batches)).backward()
        rows.append(metrics)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.trainable, cfg.max_grad_norm))
    if not math.isfinite(grad_norm):
        raise TrainingStopped(_stopped(step, f"the gradient norm is {grad_norm}", run.output))
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return _average(rows) | {"tokens": float(tokens), "grad_norm": grad_norm, "lr": lr}


def _loop(run: Run, start_step: int) -> None:
    cfg, world, summary = run.cfg, run.world, run.summary
    metrics_path = run.output / "metrics.jsonl"
    if world.main:
        check_write(metrics_path)
    log = metrics_path.open("ab") if world.main else None
    try:
        for step in range(start_step, run.total):
            t0 = time.perf_counter()
            metrics = train_step(run, step, run.micro_batches(step))
            grad_norm, lr = metrics.pop("grad_norm"), metrics.pop("lr")
            metrics = dist.mean_over_ranks(world, metrics)
            tokens_all = int(round(metrics.pop("tokens") * world.size))
            summary.tokens += tokens_all
            row = {"step": step + 1, "epoch": round((step + 1) / run.steps_per_epoch, 4), **metrics,
                   "grad_norm": grad_norm, "lr": lr, "tokens": tokens_all,
                   "tokens_per_s": tokens_all / (time.perf_counter() - t0)}
            done = step + 1 == run.total
            if run.eval_set and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or done):
                row |= _evaluate(run)
                summary.final_eval = {k: v for k, v in row.items() if k.startswith("eval/")}
            summary.steps, summary.final = step + 1, metrics
            if log is not None:
                try:
                    log.write(orjson.dumps(row) + b"\n")
                    log.flush()
                except OSError as exc:
                    raise WriteError(metrics_path, exc) from None
            run.emit("step", row | {"total": run.total})
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and not done:
                checkpoint.save_run(run, step + 1)
    finally:
        if log is not None:
            log.close()


def _evaluate(run: Run) -> dict[str, float]:
    if run.ref_values is not None:
        ref = run.ref_values[len(run.train_set):]
    else:
        ref = reference.compute(run.live_ref, run.eval_set, batch_size=run.cfg.batch_size, pad_id=run.pad_id,
                                world=run.world, autocast=run.autocast, lockstep=run.cfg.fsdp)
    return evaluate(run.logps_fn, run.eval_set, ref, run.cfg, run.pad_id, run.world, run.autocast)


def _publish(run: Run) -> None:
    policy = run.policy
    if run.cfg.fsdp:  # gathered shard by shard into process 0's CPU memory, never whole on a GPU
        state = fsdp.full_state_dict(run.policy)
        policy = fsdp.unsharded_copy(run.policy, state, run.cfg.trust_remote_code) if run.world.main else None
    if run.world.main:
        final_model = policy.merge_and_unload() if run.cfg.lora.enabled and run.cfg.lora.merge else policy
        checkpoint.publish(run.output, final_model, run.saved_with_model)
    dist.barrier(run.world)


def _stopped(step: int, what: str, output: Path) -> str:
    last = checkpoint.latest(output)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return f"step {step + 1}: {what}; training stopped ({kept}). Try a lower --lr or --dtype fp32."
