"""What one training run works with and reports: :class:`Run`, built once by ``loop.setup`` and handed to
each phase (nanoGPT keeps these as globals), and :class:`TrainSummary`, the numbers the run ends with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import dist
from .config import TrainConfig
from .data import Example, Truncation, length_grouped_batches
from .logps import CompletionLogps

Events = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainSummary:
    pairs_read: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    truncation: Truncation = field(default_factory=Truncation)
    # pair sides trained on their sampled token ids vs tokenised from text, and why they were tokenised
    sides_sampled: int = 0
    sides_tokenized: dict[str, int] = field(default_factory=dict)
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


@dataclass
class Run:
    """What the loop works with, built once by ``loop.setup``."""
    cfg: TrainConfig
    world: dist.World
    output: Path
    emit: Events
    summary: TrainSummary
    last: Path | None  # the newest complete checkpoint in output
    tokenizer: Any
    processor: Any  # a VLM's image processor, else None
    model_dir: str
    train_set: list[Example]
    eval_set: list[Example]
    digest: str
    autocast: Any
    policy: Any  # the model itself (peft-wrapped with LoRA)
    logps_fn: CompletionLogps  # policy → (sums, counts)
    train_fn: Any  # what training calls: logps_fn, DDP-wrapped when distributed
    optimizer: torch.optim.Optimizer
    trainable: list[torch.nn.Parameter]
    lengths: list[int]
    steps_per_epoch: int
    total: int
    warmup: int
    ref_values: torch.Tensor | None = None  # (N, 2) precomputed reference sums: train pairs, then eval pairs
    live_ref: Callable | None = None  # --ref model: a no-grad (sums, counts) function
    epoch_batches: dict[int, list[list[int]]] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def saved_with_model(self) -> Any:
        """What is written next to the weights so the folder loads on its own: the processor, or the tokenizer."""
        return self.processor or self.tokenizer

    def micro_batches(self, step: int) -> list[list[int]]:
        """This process's micro-batches (indices into train_set) for an optimizer step."""
        epoch, within = divmod(step, self.steps_per_epoch)
        if epoch not in self.epoch_batches:
            self.epoch_batches = {epoch: length_grouped_batches(self.lengths, self.cfg.batch_size, self.cfg.seed,
                                                                epoch)}
        batches = self.epoch_batches[epoch]
        first = within * self.cfg.grad_accum * self.world.size + self.world.rank * self.cfg.grad_accum
        return [batches[(first + micro) % len(batches)] for micro in range(self.cfg.grad_accum)]  # wraps at the end
