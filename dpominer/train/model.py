"""Loading the policy (full or LoRA), the reference, the tokenizer, and the autocast context."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .. import multimodal
from ..jsonl import InputError
from ..models import loading, resolve_model
from . import dist
from .config import TrainConfig
from .logps import CompletionLogps


def load_tokenizer(cfg: TrainConfig):
    from transformers import AutoTokenizer

    model_dir = resolve_model(cfg.model)
    with loading(cfg.model):
        if multimodal.is_vision_model(model_dir, cfg.trust_remote_code):
            return multimodal.load_processor(model_dir, cfg.trust_remote_code).tokenizer, model_dir
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise InputError(f"--model {cfg.model}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id will do
    return tokenizer, model_dir


def load_image_processor(cfg: TrainConfig, model_dir: str):
    """A vision-language model's processor (saved beside the trained model), or None for a text model."""
    if not multimodal.is_vision_model(model_dir, cfg.trust_remote_code):
        return None
    return multimodal.load_processor(model_dir, cfg.trust_remote_code)


def autocast_for(cfg: TrainConfig, device: torch.device):
    """None for fp32; a bf16 autocast context otherwise (weights and optimizer state stay fp32)."""
    bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else None


def _load(path: str | Path, cfg: TrainConfig):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with loading(cfg.model):
        if multimodal.is_vision_model(str(path), cfg.trust_remote_code):
            model = multimodal.load_model(str(path), torch.float32, cfg.trust_remote_code)
        else:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                         trust_remote_code=cfg.trust_remote_code)
    # The reference log-probs are taken without dropout; a policy with dropout would not start at loss log 2.
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def _has_vision(model) -> bool:
    return getattr(model.config, "vision_config", None) is not None


def build_policy(cfg: TrainConfig, model_dir: str, world: dist.World, resume_from: Path | None):
    """(policy model, its CompletionLogps, the module to call in training: DDP-wrapped when distributed).

    With --fsdp the CompletionLogps is itself the sharded root, and the weights of ``resume_from`` are not
    read here: they come from the sharded checkpoint once the model is sharded (``fsdp.load_sharded``)."""
    if cfg.fsdp:
        resume_from = None
    if cfg.lora.enabled:
        try:
            from peft import LoraConfig, PeftModel, get_peft_model
        except ImportError:
            raise InputError("--lora needs peft: pip install 'dpominer[lora]'") from None
        base = _load(model_dir, cfg)
        if resume_from is not None:
            policy = PeftModel.from_pretrained(base, resume_from, is_trainable=True)
        else:
            targets = cfg.lora.target_modules
            if _has_vision(base) and cfg.freeze_vision and targets == "all-linear":
                targets = multimodal.language_linear_names(base)  # the vision tower and projector stay as they are
            lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=targets, task_type="CAUSAL_LM")
            policy = get_peft_model(base, lora)
    else:
        policy = _load(resume_from or model_dir, cfg)
        if _has_vision(policy) and cfg.freeze_vision:
            multimodal.freeze_vision(policy)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy.config.use_cache = False
    policy.train()
    if cfg.fsdp:
        from .fsdp import shard

        # one padded forward per micro-batch: every process makes the same all-gathers in the same order
        logps_fn = shard(CompletionLogps(policy, padding_free=False), policy, cfg, world)
        return policy, logps_fn, logps_fn
    policy.to(world.device)
    logps_fn = CompletionLogps(policy)
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        devices = [world.device.index] if world.device.type == "cuda" else None
        # gradients as views of the all-reduce buckets: one copy of them, not two
        return policy, logps_fn, DistributedDataParallel(logps_fn, device_ids=devices, gradient_as_bucket_view=True)
    return policy, logps_fn, logps_fn


def reference_logps_fn(cfg: TrainConfig, policy, logps_fn: CompletionLogps, model_dir: str, world: dist.World,
                       resume_from: Path | None):
    """A no-grad function giving the reference's (sums, counts) for a batch.

    LoRA: the policy with its adapter switched off (no second copy). Full fine-tuning: before the first
    step the policy *is* the reference, so precomputing needs no second model; otherwise a frozen copy.
    """
    if cfg.lora.enabled:
        def with_adapter_off(**batch):
            with torch.no_grad(), (_adapters_off(policy) if cfg.fsdp else policy.disable_adapter()):
                return logps_fn(**batch)
        return with_adapter_off
    if cfg.ref == "precompute" and (resume_from is None or cfg.fsdp):  # FSDP restores the weights after this
        return torch.no_grad()(logps_fn.__call__ if cfg.fsdp else logps_fn.forward)
    frozen = _load(model_dir, cfg).eval().requires_grad_(False)
    if cfg.fsdp:
        from .fsdp import shard

        return torch.no_grad()(shard(CompletionLogps(frozen, padding_free=False), frozen, cfg, world))
    return torch.no_grad()(CompletionLogps(frozen.to(world.device)).forward)


@contextmanager
def _adapters_off(policy):
    """peft's ``disable_adapter`` also flips ``requires_grad`` of the adapter weights off and on, which
    FSDP2 does not follow (its unsharded copies keep the old flag: the next backward fails). Under FSDP
    only the flag each LoRA layer's forward reads is switched."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in policy.modules() if isinstance(m, BaseTunerLayer)]
    before = [m._disable_adapters for m in layers]
    for m in layers:
        m._disable_adapters = True
    try:
        yield
    finally:
        for m, flag in zip(layers, before, strict=True):
            m._disable_adapters = flag
