"""`--fsdp`: the policy sharded over the processes with FSDP2 (``torch.distributed.fsdp.fully_shard``).

Each process holds 1/N of the weights, gradients and AdamW moments; a unit's full weights exist only while
it runs. The units: each decoder layer (the classes the model names in ``_no_split_modules``), a vision
tower as one unit of its own (its blocks are many and small; gathered once per forward it costs one
all-gather instead of dozens), and the root — :class:`CompletionLogps` with the embeddings, final norm and
head — which stays gathered from the first layer's forward to the end of its backward.

Checkpoints are torch.distributed.checkpoint folders (one file per process, no full copy anywhere); the
final model is gathered to CPU on process 0 only and written as an ordinary ``save_pretrained`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import dist
from .config import TrainConfig

VISION_TOWERS = ("vision_tower", "visual", "vision_model")  # attribute names VLMs in transformers use
SHARDED = "sharded"  # the DCP folder inside a checkpoint


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # peft → the CausalLM


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules wrapped as one FSDP unit each, innermost first: a vision tower whole, each decoder layer."""
    block_names = set(getattr(_base(model), "_no_split_modules", None) or ())
    units: list[nn.Module] = []
    inside: list[str] = []  # prefixes of units already taken (their sub-modules are not units)

    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if name.rsplit(".", 1)[-1] in VISION_TOWERS or type(module).__name__ in block_names:
            units.append(module)
            inside.append(name)
    if not any(type(u).__name__ in block_names for u in units):  # no _no_split_modules: the longest ModuleList
        lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
        if lists:
            units += list(max(lists, key=len))
    return units


def mixed_precision(cfg: TrainConfig, device: torch.device):
    """bf16 compute (gathered weights cast once per unit), fp32 gradient reduction and fp32 master weights."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from .model import autocast_for

    if autocast_for(cfg, device) is None:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard(module: nn.Module, inner: nn.Module, cfg: TrainConfig, world: dist.World) -> nn.Module:
    """Shard ``inner``'s units and then ``module`` (the root, which holds ``inner``) in place; returns it.

    The weights may still be on the CPU: ``fully_shard`` moves each unit to the device as it shards it, so
    a GPU never holds more than its shard and one unit."""
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    kwargs: dict[str, Any] = {"mp_policy": mixed_precision(cfg, world.device)}
    if cfg.cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for unit in shard_units(inner):
        fully_shard(unit, **kwargs)
    fully_shard(module, **kwargs)
    return module


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every process takes part; process 0 gets the full weights on the CPU, the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Each process writes its shards of weights and optimizer state into folder/sharded (DCP format)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(module, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=folder / SHARDED)


def save_checkpoint(output: Path, step: int, module: nn.Module, optimizer: torch.optim.Optimizer, tokenizer,
                    trainer_state: dict[str, Any], keep: int, world: dist.World) -> None:
    """Every process writes its shards into one staging folder; process 0 renames it once all have (the
    trainer state, written last, marks it complete, as for an unsharded checkpoint)."""
    from . import checkpoint

    staging = dist.broadcast(world, checkpoint.stage(output, step) if world.main else None)
    save_sharded(staging, module, optimizer)
    dist.barrier(world)
    if world.main:
        tokenizer.save_pretrained(staging)
        checkpoint.commit(staging, trainer_state, keep)
    dist.barrier(world)


def load_sharded(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The inverse of :func:`save_sharded`, each process reading its own shards (resharded if N changed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(module, optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=folder / SHARDED)
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def unsharded_copy(policy: nn.Module, state: dict[str, torch.Tensor], trust_remote_code: bool) -> nn.Module:
    """A CPU model of the policy's class and config (with its LoRA adapter) holding the gathered ``state``:
    built on the meta device and filled by assignment, so the weights are in memory once."""
    base = _base(policy)
    with torch.device("meta"):
        twin = type(base)._from_config(base.config, dtype=torch.float32)
    if base is not policy:  # peft: the same adapter layout
        from peft import get_peft_model

        twin = get_peft_model(twin, policy.peft_config["default"])
    twin.load_state_dict(state, assign=True, strict=True)
    if hasattr(_base(twin), "tie_weights"):
        _base(twin).tie_weights()
    return twin.eval()
