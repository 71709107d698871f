"""The little of torch.distributed the loop needs. Under `torchrun` (WORLD_SIZE > 1) it runs DDP over
gloo on CPU or NCCL on GPUs; otherwise every helper is a no-op, so one code path serves both."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


LAUNCH = "torchrun --nproc-per-node N -m dpominer train …"


def launched() -> bool:
    """Started by torchrun (or another launcher that sets the torch.distributed environment)."""
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR"))


def setup(always: bool = False) -> World:
    """The process group: under torchrun with more than one process, or with ``always`` (FSDP, which needs one
    even for a single process)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if (size > 1 or always) and not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(int(os.environ.get("RANK", "0")), size, device)


def teardown(world: World) -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def set_grad_sync(module: Any, sync: bool) -> None:
    """Whether the next backward reduces gradients over the processes. Off for all but the last micro-batch
    of an optimizer step (each process accumulates locally, one reduction per step). DDP reads the flag at
    forward time; FSDP2 modules take it through ``set_requires_gradient_sync``; a plain module has none."""
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(sync)
    elif hasattr(module, "require_backward_grad_sync"):  # DDP: what its no_sync() context toggles
        module.require_backward_grad_sync = sync


def barrier(world: World) -> None:
    if torch_dist.is_initialized():
        torch_dist.barrier()


def mean_over_ranks(world: World, values: dict[str, float]) -> dict[str, float]:
    if not world.distributed:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=world.device)
    torch_dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist(), strict=True)}


def any_rank(world: World, flag: bool) -> bool:
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=world.device)
    torch_dist.all_reduce(t)
    return bool(t.item())


def gather(world: World, obj: Any) -> list[Any]:
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast(world: World, obj: Any) -> Any:
    if not world.distributed:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
