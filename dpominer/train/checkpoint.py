"""Checkpoints: weights via ``save_pretrained`` (safetensors) + tokenizer + optimizer, scheduler and RNG
state, each written to a temporary folder and renamed into place, so a kill mid-write never leaves a
checkpoint that looks complete. ``--resume`` picks the newest complete one."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import torch

from ..guard import WriteError, check_write, temp_path
from ..jsonl import InputError
from . import dist, fsdp
from .config import TrainConfig

if TYPE_CHECKING:
    from .state import Run

STATE = "trainer_state.pt"
MODEL_MARKERS = ("config.json", "adapter_config.json")
# settings a resumed run may change
UNCHECKED_ON_RESUME = {"save_every", "keep_checkpoints", "eval_every", "threads", "max_steps", "epochs"}


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / "checkpoints" / f"step-{step:07d}"


def latest(output: Path) -> Path | None:
    root = output / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE).exists()) if root.is_dir() else []
    return done[-1] if done else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_model(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def save(output: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep: int) -> Path:
    staging = stage(output, step)
    try:
        save_model(model, tokenizer, staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(checkpoint_dir(output, step), exc, "; earlier checkpoints are kept") from None
    return commit(staging, trainer_state, keep)


def stage(output: Path, step: int) -> Path:
    """An empty hidden folder to write step's checkpoint into; :func:`commit` renames it into place."""
    final = checkpoint_dir(output, step)
    check_write(final)
    staging = final.with_name(f".step-{step:07d}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise WriteError(final, exc, "; earlier checkpoints are kept") from None
    return staging


def commit(staging: Path, trainer_state: dict[str, Any], keep: int) -> Path:
    """Write the trainer state last and rename the folder into place; drop all but the newest ``keep``."""
    final = staging.with_name(staging.name[1:].removesuffix(".tmp"))
    try:
        torch.save(trainer_state, staging / STATE)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        _fsync_dir(final.parent)
    except OSError as exc:
        raise WriteError(final, exc, "; earlier checkpoints are kept") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(p for p in final.parent.glob("step-*") if p != final)[:-keep + 1 or None]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(folder: Path) -> dict[str, Any]:
    """Tensors, numbers, strings and containers only (``weights_only``): a crafted file cannot run code."""
    try:
        return torch.load(folder / STATE, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or ValueError for a file it refuses
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"--resume: {folder / STATE} is not a plain trainer state (refused to load: "
                         f"{first[:200]}); delete that checkpoint to resume from an earlier one") from None


def publish(output: Path, model, tokenizer) -> None:
    """Write the final model into ``output`` itself, its config last: a folder that has the config has
    the weights."""
    staging = temp_path(output / "final")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        save_model(model, tokenizer, staging)
        names = sorted((p.name for p in staging.iterdir()), key=lambda n: n in MODEL_MARKERS)
        for name in names:
            check_write(output / name)  # all checked before the first is moved
        for name in names:
            os.replace(staging / name, output / name)
    except OSError as exc:
        raise WriteError(output, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the metric rows a killed run logged after its last checkpoint (they are redone)."""
    if not path.exists():
        return
    kept = [line for line in path.read_bytes().splitlines(keepends=True)
            if line.strip() and line.endswith(b"\n") and orjson.loads(line)["step"] <= step]
    check_write(path)
    tmp = temp_path(path)
    tmp.write_bytes(b"".join(kept))
    tmp.replace(path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------ a run's checkpoints

def check_output(output: Path, resume: bool) -> Path | None:
    """The newest complete checkpoint to resume from; refuses a folder that holds another run."""
    last = latest(output)
    if last is not None and not resume:
        raise InputError(f"-o {output}: holds checkpoints up to {last.name}; pass --resume to go on from there, "
                         "or choose another output folder")
    earlier = (output / "metrics.jsonl").exists()
    if resume and last is None and earlier:
        raise InputError(f"--resume: {output} has no complete checkpoint to resume from")
    if not resume and earlier:
        raise InputError(f"-o {output}: holds an earlier run (metrics.jsonl); choose another output folder or "
                         "delete it")
    return last


def restore(run: Run) -> int:
    """Optimizer and RNG state of the newest checkpoint (its weights were loaded with the policy); its step."""
    state = load_state(run.last)
    check_resume(state, run.cfg, run.digest, run.last)
    if run.cfg.fsdp:
        fsdp.load_sharded(run.last, run.train_fn, run.optimizer)
    else:
        run.optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"][run.world.rank])
    run.summary.resumed_from = state["step"]
    if run.world.main:
        truncate_metrics(run.output / "metrics.jsonl", state["step"])
    return state["step"]


def check_resume(state: dict[str, Any], cfg: TrainConfig, digest: str, where: Path) -> None:
    """The same pairs and settings as the checkpoint's run (bar those in ``UNCHECKED_ON_RESUME``)."""
    if state["data"] != digest:
        raise InputError(f"--resume: the pairs differ from those {where} was trained on")
    before, now = state["config"], cfg.model_dump(mode="json")
    for key in sorted(set(before) | set(now)):
        if key not in UNCHECKED_ON_RESUME and before.get(key) != now.get(key):
            raise InputError(f"--resume: {key} was {before.get(key)!r} in {where}, now {now.get(key)!r}")


def save_run(run: Run, step: int) -> None:
    """Checkpoint ``step``: weights, the processor or tokenizer, optimizer, every process's RNG state."""
    rngs = dist.gather(run.world, rng_state())
    state = {"step": step, "rng": rngs, "config": run.cfg.model_dump(mode="json"), "data": run.digest}
    if not run.cfg.fsdp:
        if run.world.main:
            state["optimizer"] = run.optimizer.state_dict()
            save(run.output, step, run.policy, run.saved_with_model, state, run.cfg.keep_checkpoints)
        dist.barrier(run.world)
        return
    fsdp.save_checkpoint(run.output, step, run.train_fn, run.optimizer, run.saved_with_model, state,
                         run.cfg.keep_checkpoints, run.world)
