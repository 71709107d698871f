"""Settings of `dpominer train` (one pydantic model; flags and --config files fill it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..images import DEFAULT_DPI
from ..models import DEFAULT_MODEL


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(False, description="train a LoRA adapter instead of all weights (needs peft)")
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field("all-linear", description="peft target_modules")
    merge: bool = Field(False, description="write the merged full model instead of the adapter")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(DEFAULT_MODEL, description="hub id, local dir, or a bundled alias")
    # the objective
    beta: float = Field(0.1, gt=0, description="DPO β: strength of the pull toward the reference")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO / robust DPO ε (sigmoid loss)")
    sft_weight: float = Field(0.0, ge=0, description="weight of an NLL term on the chosen side")
    length_normalize: bool = Field(False, description="mean instead of sum of completion log-probs")
    length_penalty: float = Field(0.0, description="R-DPO α: adds α·(|chosen| − |rejected|) tokens inside the "
                                                   "sigmoid; < 0 discounts pairs whose chosen side is shorter")
    # data
    max_length: int = Field(1024, ge=2, description="tokens of prompt + completion")
    max_prompt_length: int | None = Field(None, ge=1, description="prompt tokens kept (its end)")
    loop_copies: int = Field(4, ge=1, description="loop copies a truncated rejected side keeps after the onset")
    rejected_loop_copies: int = Field(
        3, ge=0, description="cut every rejected loop to its onset + this many copies (0: keep it whole)")
    tokenize_separately: bool = Field(False, description="tokenise prompt and completion apart")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of documents held out for eval metrics")
    # optimisation
    lr: float | None = Field(None, gt=0, description="default 1e-6 (full) or 5e-5 (LoRA)")
    batch_size: int = Field(4, ge=1, description="pairs per micro-batch (per process)")
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="autocast dtype; auto: bf16 on a GPU")
    gradient_checkpointing: bool = False
    fsdp: bool = Field(False, description="shard weights, gradients and optimizer state over the processes "
                       "(FSDP2, under torchrun) instead of replicating them (DDP)")
    cpu_offload: bool = Field(False, description="with fsdp: keep the shards and the optimizer step on the CPU")
    ref: Literal["precompute", "model"] = Field(
        "precompute", description="reference log-probs computed once and cached, or a live reference")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # vision-language models
    freeze_vision: bool = Field(True, description="keep the vision tower and projector frozen (LoRA: the "
                                "language model's layers only)")
    dpi: int = Field(DEFAULT_DPI, ge=18, le=1200, description="resolution PDF pages are rendered at")
    # bookkeeping
    seed: int = 0
    eval_every: int = Field(0, ge=0, description="optimizer steps between evals (0: at the end only)")
    save_every: int = Field(50, ge=0, description="optimizer steps between checkpoints (0: none)")
    keep_checkpoints: int = Field(2, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _check(self):
        if self.max_prompt_length is not None and self.max_prompt_length >= self.max_length:
            raise ValueError("max_prompt_length must be below max_length")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError("label_smoothing applies to the sigmoid loss only")
        if self.length_penalty and self.loss_type == "ipo":
            raise ValueError("length_penalty applies to the sigmoid and hinge losses, not ipo")
        if self.cpu_offload and not self.fsdp:
            raise ValueError("cpu_offload needs fsdp (--cpu-offload goes with --fsdp)")
        return self

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-5 if self.lora.enabled else 1e-6
