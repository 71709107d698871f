"""`dpominer train`: DPO on preference pairs, in one readable loop (no Trainer, no callbacks).

Phases: read and tokenise the pairs → load the policy (LoRA optional) → reference log-probs (precomputed
and cached, or a live reference) → resume → for each optimizer step: learning rate, forward/backward
over the micro-batches, clip, step, log, eval, checkpoint → write the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch

from ..guard import WriteError, check_write, temp_path
from ..records import InputError, iter_jsonl
from . import checkpoint, dist, reference
from .config import TrainConfig
from .data import (
    Example,
    PairCheck,
    PreferenceRecord,
    Truncation,
    collate,
    data_digest,
    in_eval_split,
    length_grouped_batches,
    to_device,
    tokenize_pair,
    truncate,
)
from .loss import dpo_loss
from .model import autocast_for, build_policy, load_image_processor, load_tokenizer, reference_logps_fn
from .vision import tokenize_image_pair

Events = Callable[[str, dict[str, Any]], None]
UNCHECKED_ON_RESUME = {"save_every", "keep_checkpoints", "eval_every", "threads", "max_steps", "epochs"}


class TrainingStopped(Exception):
    """Training cannot go on (non-finite loss or gradient); the message says where it stopped."""


@dataclass
class TrainSummary:
    pairs_read: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    truncation: Truncation = field(default_factory=Truncation)
    steps: int = 0
    resumed_from: int | None = None
    ref_cache: str | None = None
    ref_cache_hit: bool = False
    seconds: float = 0.0
    tokens: int = 0
    final: dict[str, float] = field(default_factory=dict)
    final_eval: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # invalid pairs dropped by --skip-invalid, by reason

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["truncation"] = dict(self.truncation.__dict__)
        return out


def read_examples(pairs: Path, tokenizer, cfg: TrainConfig, skip_invalid: bool,
                  summary: TrainSummary, processor=None) -> tuple[list[Example], list[Example]]:
    """Validate every pair (see :class:`PairCheck`) and tokenise it, before the model is loaded.

    A bad pair stops the run naming ``pairs:LINE``; ``skip_invalid`` drops it and counts it by reason."""
    checker = PairCheck()

    def check(record: PreferenceRecord) -> None:  # ValueError → "pairs:LINE: why"
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
    for _ in iter_jsonl(pairs, PreferenceRecord, skip_invalid=skip_invalid, unique_ids=False, check=check,
                        on_line=checker.line, on_skip=skipped):
        summary.pairs_read += 1
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
    for start in range(world.rank * cfg.batch_size, len(examples), cfg.batch_size * world.size):
        chunk = examples[start:start + cfg.batch_size]
        batch = to_device(collate(chunk, pad_id), world.device)
        with autocast or nullcontext():
            sums, counts = logps_fn(**batch)
        _, metrics = pair_metrics(sums.float(), counts, ref[start:start + len(chunk)].to(world.device), cfg)
        rows.append(metrics)
    merged = [r for part in dist.gather(world, rows) for r in part]
    return {f"eval/{k}": v for k, v in _average(merged).items()}


def _check_resume(state: dict[str, Any], cfg: TrainConfig, digest: str, where: Path) -> None:
    if state["data"] != digest:
        raise InputError(f"--resume: the pairs differ from those {where} was trained on")
    before, now = state["config"], cfg.model_dump(mode="json")
    for key in sorted(set(before) | set(now)):
        if key not in UNCHECKED_ON_RESUME and before.get(key) != now.get(key):
            raise InputError(f"--resume: {key} was {before.get(key)!r} in {where}, now {now.get(key)!r}")


def train(pairs: Path, output: Path, cfg: TrainConfig, *, resume: bool = False, skip_invalid: bool = False,
          on_event: Events | None = None) -> TrainSummary:
    emit = on_event or (lambda kind, data: None)
    world = dist.setup()
    try:
        return _train(pairs, output, cfg, world, resume, skip_invalid, emit)
    finally:
        dist.teardown(world)


def _train(pairs: Path, output: Path, cfg: TrainConfig, world: dist.World, resume: bool, skip_invalid: bool,
           emit: Events) -> TrainSummary:
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    summary = TrainSummary()
    last = checkpoint.latest(output)
    if last is not None and not resume:
        raise InputError(f"-o {output}: holds checkpoints up to {last.name}; pass --resume to go on from there, "
                         "or choose another output folder")
    earlier = (output / "metrics.jsonl").exists()
    if resume and last is None and earlier:
        raise InputError(f"--resume: {output} has no complete checkpoint to resume from")
    if not resume and earlier:
        raise InputError(f"-o {output}: holds an earlier run (metrics.jsonl); choose another output folder or "
                         "delete it")

    # --- data
    tokenizer, model_dir = load_tokenizer(cfg)
    processor = load_image_processor(cfg, model_dir)  # a VLM's: renders image pairs, is saved with the model
    train_set, eval_set = read_examples(pairs, tokenizer, cfg, skip_invalid, summary, processor)
    digest = data_digest(train_set + eval_set)
    emit("data", summary.as_dict())

    # --- policy, and the reference
    autocast = autocast_for(cfg, world.device)
    policy, logps_fn, ddp_fn = build_policy(cfg, model_dir, world, resume_from=last if resume else None)
    ref_values = None
    if cfg.ref == "precompute":
        path = reference.cache_path(reference.model_fingerprint(model_dir), digest, str(autocast_dtype(autocast)))
        summary.ref_cache = str(path)
        ref_values = reference.load(path, len(train_set) + len(eval_set))
        summary.ref_cache_hit = ref_values is not None
        if ref_values is None:
            ref_fn = reference_logps_fn(cfg, policy, logps_fn, model_dir, world, resume_from=last if resume else None)
            emit("ref_start", {"pairs": len(train_set) + len(eval_set)})
            ref_values = reference.compute(ref_fn, train_set + eval_set, batch_size=cfg.batch_size,
                                           pad_id=tokenizer.pad_token_id, world=world, autocast=autocast,
                                           on_batch=lambda n: emit("ref_batch", {"pairs": n}))
            del ref_fn  # a frozen copy, if one was loaded for this, is not kept through training
            if world.main:
                reference.save(path, ref_values)
        live_ref = None
    else:
        live_ref = reference_logps_fn(cfg, policy, logps_fn, model_dir, world,
                                      resume_from=last if resume else None)

    # --- optimizer, schedule, resume
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lengths = [e.length() for e in train_set]
    per_step = cfg.grad_accum * world.size  # micro-batches per optimizer step, over all processes
    n_micro = len(length_grouped_batches(lengths, cfg.batch_size, cfg.seed, 0))
    steps_per_epoch = math.ceil(n_micro / per_step)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = int(cfg.warmup_ratio * total)
    start_step = 0
    metrics_path = output / "metrics.jsonl"
    if resume and last is not None:
        state = checkpoint.load_state(last)
        _check_resume(state, cfg, digest, last)
        optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"][world.rank])
        start_step = summary.resumed_from = state["step"]
        if world.main:
            _truncate_metrics(metrics_path, start_step)
    output.mkdir(parents=True, exist_ok=True)
    emit("start", {"total": total, "start": start_step, "steps_per_epoch": steps_per_epoch})

    # --- the loop
    epoch_batches: dict[int, list[list[int]]] = {}
    if world.main:
        check_write(metrics_path)
    log = metrics_path.open("ab") if world.main else None
    try:
        for step in range(start_step, total):
            t0 = time.perf_counter()
            lr = lr_at(step, total, warmup, cfg.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            epoch, within = divmod(step, steps_per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: length_grouped_batches(lengths, cfg.batch_size, cfg.seed, epoch)}
            batches = epoch_batches[epoch]
            first = within * per_step + world.rank * cfg.grad_accum
            rows, tokens = [], 0
            for micro in range(cfg.grad_accum):
                idx = batches[(first + micro) % len(batches)]  # the last step of an epoch wraps around
                batch = to_device(collate([train_set[i] for i in idx], tokenizer.pad_token_id), world.device)
                tokens += int(batch["attention_mask"].sum())
                sync = micro == cfg.grad_accum - 1
                with (nullcontext() if sync or not world.distributed else ddp_fn.no_sync()):
                    with autocast or nullcontext():
                        sums, counts = ddp_fn(**batch)  # (2B,)
                        if live_ref is not None:
                            ref_sums = torch.stack(live_ref(**batch)[0].float().detach().split(len(idx)), 1)
                        else:
                            ref_sums = ref_values[idx].to(world.device)
                    loss, metrics = pair_metrics(sums.float(), counts, ref_sums, cfg)
                    if not dist.any_rank(world, not torch.isfinite(loss).item()):
                        (loss / cfg.grad_accum).backward()
                    else:
                        raise TrainingStopped(_stopped(step, f"the loss is {loss.item()}", output))
                rows.append(metrics)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            if not math.isfinite(float(grad_norm)):
                raise TrainingStopped(_stopped(step, f"the gradient norm is {float(grad_norm)}", output))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            # --- log, eval, checkpoint
            metrics = dist.mean_over_ranks(world, _average(rows) | {"tokens": float(tokens)})
            tokens_all = int(round(metrics.pop("tokens") * world.size))
            summary.tokens += tokens_all
            elapsed = time.perf_counter() - t0
            row = {"step": step + 1, "epoch": round((step + 1) / steps_per_epoch, 4), **metrics,
                   "grad_norm": float(grad_norm), "lr": lr, "tokens": tokens_all, "tokens_per_s": tokens_all / elapsed}
            done = step + 1 == total
            if eval_set and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or done):
                row |= evaluate(logps_fn, eval_set, ref_values[len(train_set):] if ref_values is not None
                                else _live_eval_ref(live_ref, eval_set, cfg, tokenizer, world, autocast),
                                cfg, tokenizer.pad_token_id, world, autocast)
                summary.final_eval = {k: v for k, v in row.items() if k.startswith("eval/")}
            summary.steps, summary.final = step + 1, metrics
            if log is not None:
                try:
                    log.write(orjson.dumps(row) + b"\n")
                    log.flush()
                except OSError as exc:
                    raise WriteError(metrics_path, exc) from None
            emit("step", row | {"total": total})
            if cfg.save_every and (step + 1) % cfg.save_every == 0 and not done:
                _save_checkpoint(output, step + 1, policy, processor or tokenizer, optimizer, cfg, digest, world)
    finally:
        if log is not None:
            log.close()

    # --- the model
    if world.main:
        final_model = policy.merge_and_unload() if cfg.lora.enabled and cfg.lora.merge else policy
        checkpoint.publish(output, final_model, processor or tokenizer)
    dist.barrier(world)
    summary.seconds = round(time.perf_counter() - started, 2)
    return summary


def autocast_dtype(autocast) -> str:
    return "fp32" if autocast is None else str(autocast.fast_dtype).removeprefix("torch.")


def _live_eval_ref(live_ref, eval_set, cfg, tokenizer, world, autocast) -> torch.Tensor:
    return reference.compute(live_ref, eval_set, batch_size=cfg.batch_size, pad_id=tokenizer.pad_token_id,
                             world=world, autocast=autocast)


def _save_checkpoint(output: Path, step: int, policy, tokenizer, optimizer, cfg: TrainConfig, digest: str,
                     world: dist.World) -> None:
    rngs = dist.gather(world, checkpoint.rng_state())
    if world.main:
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rngs,
                 "config": cfg.model_dump(mode="json"), "data": digest}
        checkpoint.save(output, step, policy, tokenizer, state, cfg.keep_checkpoints)
    dist.barrier(world)


def _stopped(step: int, what: str, output: Path) -> str:
    last = checkpoint.latest(output)
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
    return f"step {step + 1}: {what}; training stopped ({kept}). Try a lower --lr or --dtype fp32."


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the metric rows a killed run logged after its last checkpoint (they are redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_bytes().splitlines(keepends=True)
            if line.strip() and line.endswith(b"\n") and orjson.loads(line)["step"] <= step]
    check_write(path)
    tmp = temp_path(path)
    tmp.write_bytes(b"".join(kept))
    tmp.replace(path)
