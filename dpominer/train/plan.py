"""`dpominer train --plan`: per-GPU memory of DDP and FSDP for a model and a batch, before anything is loaded.

The model is built on the meta device from its config (no weights read), so the counts are exact; the
memory is the formula below, in bytes per GPU, with N GPUs, P weights, T trainable weights (all of them,
or the LoRA adapters), c bytes per activation (2 under bf16, else 4):

    DDP   weights 4P (fp32 master copy) + 2T under bf16 (autocast's cached bf16 copies)
          grads 4T, AdamW moments 8T, a live reference (--ref model, full fine-tune) 4P
    FSDP  weights 4P/N + c·(R + 2U): the shard, the root (R: embeddings, norm, head) gathered for the whole
          step, and the unit running plus the one prefetched (U: the largest decoder layer or vision tower)
          grads 4T/N + 4U·T/P (a unit's gradients before the reduce-scatter), AdamW 8T/N, reference 4P/N
          --cpu-offload: the shards (weights, grads, AdamW) live on the CPU; the GPU keeps c·(R + 2U)
    activations (both), S = 2·batch·max_length tokens (chosen and rejected rows, padded to the longest):
          without checkpointing  S·L·(9H + 2K + 4I)·c     per decoder layer and token: three tensors per
                                                          RMSNorm (input, normalised, scaled) twice, q, k, v
                                                          after RoPE, attention output, o_proj input, and
                                                          gate, up, SiLU(gate), their product
          with checkpointing     S·L·H·c + S·(9H + 2K + 4I)·c   (layer inputs, one layer recomputed)
          plus the head: S·H·4 (fp32 hidden states kept by the chunked log-prob) + 3·512·V·4 (one chunk)
    (L layers, H hidden, K key/value width, I MLP width, V vocabulary.) It fits when the total stays under
    the GPU's memory less 10 % (CUDA context, allocator fragmentation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..jsonl import InputError
from ..models import resolve_model
from .config import TrainConfig
from .fsdp import shard_units

GIB = 1 << 30
RESERVE = 0.10  # of each GPU's memory kept free for the CUDA context and fragmentation
HEAD_CHUNK_ROWS = 512  # logps.CHUNK_ROWS


@dataclass(frozen=True)
class ModelSize:
    params: int  # P: every weight (tied ones once)
    trainable: int  # T: what AdamW updates (LoRA: the adapters)
    layers: int
    hidden: int
    kv_width: int  # K: num_key_value_heads × head_dim
    intermediate: int
    vocab: int
    largest_unit: int  # U: weights of the largest FSDP unit
    root: int  # R: weights outside every unit


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU of one way of training."""
    weights: float
    grads: float
    optimizer: float
    reference: float
    activations: float  # without gradient checkpointing
    activations_checkpointed: float

    def static(self) -> float:
        return self.weights + self.grads + self.optimizer + self.reference

    def total(self, checkpointing: bool) -> float:
        return self.static() + (self.activations_checkpointed if checkpointing else self.activations)


def model_size(cfg: TrainConfig) -> ModelSize:
    """Counts from the config alone: the model is built on the meta device (no memory, no download of weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(resolve_model(cfg.model), trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {cfg.model}: cannot read its config ({str(exc).splitlines()[0]})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
        if cfg.lora.enabled:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha,
                                                     target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM"))
    units = shard_units(model)
    in_units = {id(p) for u in units for p in u.parameters()}
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelSize(
        params=sum(p.numel() for p in model.parameters()),
        trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=text.num_hidden_layers, hidden=text.hidden_size,
        kv_width=(getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        intermediate=text.intermediate_size, vocab=text.vocab_size,
        largest_unit=max((sum(p.numel() for p in u.parameters()) for u in units), default=0),
        root=sum(p.numel() for p in model.parameters() if id(p) not in in_units))


def activation_bytes(size: ModelSize, cfg: TrainConfig, bf16: bool) -> tuple[float, float]:
    """(without, with gradient checkpointing) bytes of one micro-batch's saved activations."""
    c = 2 if bf16 else 4
    tokens = 2 * cfg.batch_size * cfg.max_length  # chosen and rejected rows
    per_layer = 9 * size.hidden + 2 * size.kv_width + 4 * size.intermediate  # elements per token
    head = tokens * size.hidden * 4 + 3 * HEAD_CHUNK_ROWS * size.vocab * 4
    full = tokens * size.layers * per_layer * c + head
    checkpointed = tokens * size.layers * size.hidden * c + tokens * per_layer * c + head
    return full, checkpointed


def estimate(size: ModelSize, cfg: TrainConfig, gpus: int, fsdp: bool, bf16: bool) -> Memory:
    P, T, n = size.params, size.trainable, gpus  # noqa: N806 (the formula's names)
    c = 2 if bf16 else 4
    live_reference = cfg.ref == "model" and not cfg.lora.enabled  # LoRA: the policy with adapters off
    full, checkpointed = activation_bytes(size, cfg, bf16)
    if not fsdp:
        return Memory(weights=4 * P + (2 * T if bf16 else 0), grads=4 * T, optimizer=8 * T,
                      reference=4 * P if live_reference else 0, activations=full, activations_checkpointed=checkpointed)
    on_gpu = 0 if cfg.cpu_offload else 1
    gathered = c * (size.root + 2 * size.largest_unit)
    return Memory(weights=on_gpu * 4 * P / n + gathered,
                  grads=on_gpu * 4 * T / n + 4 * size.largest_unit * T / P,
                  optimizer=on_gpu * 8 * T / n, reference=on_gpu * 4 * P / n if live_reference else 0,
                  activations=full, activations_checkpointed=checkpointed)


@dataclass(frozen=True)
class Plan:
    size: ModelSize
    gpus: int
    gpu_bytes: float
    bf16: bool
    ddp: Memory
    fsdp: Memory
    checkpointing: bool

    @property
    def usable(self) -> float:
        return self.gpu_bytes * (1 - RESERVE)

    def fits(self, memory: Memory) -> bool:
        return memory.total(self.checkpointing) <= self.usable

    def choice(self) -> str:
        """ddp when it fits (no all-gathers: faster), else fsdp when it fits, else none."""
        return "ddp" if self.fits(self.ddp) else "fsdp" if self.fits(self.fsdp) else "none"


def make_plan(cfg: TrainConfig, gpus: int, gpu_bytes: float, bf16: bool, size: ModelSize | None = None) -> Plan:
    size = size or model_size(cfg)
    return Plan(size, gpus, gpu_bytes, bf16, estimate(size, cfg, gpus, False, bf16),
                estimate(size, cfg, gpus, True, bf16), cfg.gradient_checkpointing)


def runtime_gpus(cfg: TrainConfig, gpus: int | None, gpu_memory_gib: float | None) -> tuple[int, float | None, bool]:
    """(GPU count, bytes per GPU or None when unknown, bf16?) from the flags, else from this machine."""
    cuda = torch.cuda.is_available()
    count = gpus or int(os.environ.get("WORLD_SIZE", "0")) or (torch.cuda.device_count() if cuda else 1)
    if gpu_memory_gib is not None:
        memory = gpu_memory_gib * GIB
    else:
        memory = float(torch.cuda.get_device_properties(0).total_memory) if cuda else None
    bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and cuda and torch.cuda.is_bf16_supported())
    return count, memory, bf16


def static_misfit(plan: Plan, fsdp: bool) -> str | None:
    """Why the chosen way cannot fit whatever the batch (weights, grads, optimizer, reference), or None."""
    memory = plan.fsdp if fsdp else plan.ddp
    if memory.static() <= plan.usable:
        return None
    way = "--fsdp" if fsdp else "DDP"
    extra = f" of which the --ref model copy is {memory.reference / GIB:.2f} GiB (--ref precompute needs none)" \
        if memory.reference else ""
    return (f"{way}: weights, gradients, optimizer state and reference need {memory.static() / GIB:.2f} GiB per GPU"
            f"{extra}; each of the {plan.gpus} GPU(s) has {plan.usable / GIB:.2f} GiB usable "
            f"(dpominer train --plan shows the numbers)")


def plan_rows(plan: Plan) -> list[tuple[str, str, str]]:
    """(what, DDP, FSDP) rows in GiB per GPU, for the table `--plan` prints."""
    def gib(x: float) -> str:
        return f"{x / GIB:.3g}"

    rows = [(name, gib(getattr(plan.ddp, key)), gib(getattr(plan.fsdp, key))) for name, key in (
        ("weights", "weights"), ("gradients", "grads"), ("optimizer state (AdamW)", "optimizer"),
        ("reference (--ref model)", "reference"), ("activations", "activations"),
        ("activations, checkpointed", "activations_checkpointed"))]
    ckpt = plan.checkpointing
    rows.append((f"total ({'with' if ckpt else 'without'} --gradient-checkpointing)",
                 gib(plan.ddp.total(ckpt)), gib(plan.fsdp.total(ckpt))))
    rows.append(("fits", "yes" if plan.fits(plan.ddp) else "no", "yes" if plan.fits(plan.fsdp) else "no"))
    return rows
