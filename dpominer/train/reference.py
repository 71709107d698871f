"""Reference log-probs computed once, before training, and cached on disk.

DPO compares the policy with a frozen reference on every pair. Keeping a second model in memory doubles
the weights held and adds a forward pass per step; but the reference never changes, so its log-probs
are a property of (model, data): computed once here and cached under a key of both, so a second run
(another β, another learning rate) loads them in a blink.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..guard import check_write, temp_path
from ..models import cache_dir
from . import dist
from .data import Example, collate, to_device
from .model import reference_logps_fn

if TYPE_CHECKING:
    from .state import Run

FORMAT = 1  # bump when the numbers a cache file holds change meaning


def model_fingerprint(model_dir: str) -> str:
    """Config plus size and head/tail bytes of each weight file: cheap, and changes when weights do."""
    path = Path(model_dir)
    if not path.is_dir():
        return model_dir  # a hub id as given
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(path.iterdir()):
        if f.name == "config.json" or f.suffix in {".safetensors", ".bin", ".pt"}:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as handle:
                h.update(handle.read(1 << 20))
                if size > 2 << 20:
                    handle.seek(-(1 << 20), 2)
                    h.update(handle.read())
    return h.hexdigest()


def cache_path(model_key: str, data_key: str, dtype: str) -> Path:
    key = hashlib.blake2b(f"{FORMAT}:{model_key}:{data_key}:{dtype}".encode(), digest_size=12).hexdigest()
    return cache_dir() / "ref" / f"{key}.pt"


@torch.no_grad()
def compute(logps_fn: Callable, examples: list[Example], *, batch_size: int, pad_id: int, world: dist.World,
            autocast, on_batch: Callable[[int], None] | None = None, lockstep: bool = False) -> torch.Tensor:
    """(N, 2) fp32 summed completion log-probs of chosen and rejected under ``logps_fn``.

    Each process computes every world.size-th pair; the results are gathered on all of them. ``lockstep``
    (a sharded model, whose every forward is a collective): each process makes the same number of calls,
    one with fewer pairs repeating its first batch and dropping the result.
    """
    mine = list(range(world.rank, len(examples), world.size))
    mine.sort(key=lambda i: examples[i].length())  # similar lengths together: less padding
    found: dict[int, tuple[float, float]] = {}
    starts = list(range(0, len(mine), batch_size))
    if lockstep:
        most = -(-len(range(0, len(examples), world.size)) // batch_size)  # process 0 has the most pairs
        starts += [None] * (most - len(starts))
    for start in starts:
        idx = mine[start:start + batch_size] if start is not None else mine[:batch_size] or [0]
        batch = to_device(collate([examples[i] for i in idx], pad_id), world.device)
        with autocast or nullcontext():
            sums, _ = logps_fn(**batch)  # (2B,)
        if start is None:
            continue  # a filler call, so the collectives pair up
        chosen, rejected = sums.float().cpu().split(len(idx))
        found.update({i: (c, r) for i, c, r in zip(idx, chosen.tolist(), rejected.tolist(), strict=True)})
        if on_batch is not None:
            on_batch(len(idx) * world.size)
    merged: dict[int, tuple[float, float]] = {}
    for part in dist.gather(world, found):
        merged.update(part)
    return torch.tensor([merged[i] for i in range(len(examples))], dtype=torch.float32)


def load(path: Path, n: int) -> torch.Tensor | None:
    if not path.exists():
        return None
    values = torch.load(path, weights_only=True)
    return values if values.shape == (n, 2) else None


def save(path: Path, values: torch.Tensor) -> None:
    """A cache write that fails (full disk, read-only cache) is skipped: the next run computes again."""
    check_write(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(values, tmp)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)


def prepare(run: Run) -> None:
    """The reference's log-probs: from the cache, computed once before step 1, or a live model (--ref model)."""
    cfg, world, resume_from = run.cfg, run.world, run.last
    if cfg.ref == "model":
        run.live_ref = reference_logps_fn(cfg, run.policy, run.logps_fn, run.model_dir, world, resume_from)
        return
    everything = run.train_set + run.eval_set
    numerics = autocast_dtype(run.autocast) + ("/fsdp" if cfg.fsdp else "")  # FSDP: padded, bf16 weights
    path = cache_path(model_fingerprint(run.model_dir), run.digest, numerics)
    run.summary.ref_cache = str(path)
    run.ref_values = load(path, len(everything))
    run.summary.ref_cache_hit = run.ref_values is not None
    if run.ref_values is None:
        ref_fn = reference_logps_fn(cfg, run.policy, run.logps_fn, run.model_dir, world, resume_from)
        run.emit("ref_start", {"pairs": len(everything)})
        run.ref_values = compute(ref_fn, everything, batch_size=cfg.batch_size, pad_id=run.pad_id, world=world,
                                 autocast=run.autocast, lockstep=cfg.fsdp,
                                 on_batch=lambda n: run.emit("ref_batch", {"pairs": n}))
        del ref_fn  # a frozen copy, if one was loaded for this, is not kept through training
        if world.main:
            save(path, run.ref_values)


def autocast_dtype(autocast) -> str:
    """The numerics a cache file's values were computed in (part of its key)."""
    return "fp32" if autocast is None else str(autocast.fast_dtype).removeprefix("torch.")
