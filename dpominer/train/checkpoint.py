"""Checkpoints: weights via ``save_pretrained`` (safetensors) + tokenizer + optimizer, scheduler and RNG
state, each written to a temporary folder and renamed into place, so a kill mid-write never leaves a
checkpoint that looks complete. ``--resume`` picks the newest complete one."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import orjson
import torch

from ..guard import WriteError, check_write, temp_path
from ..jsonl import InputError

STATE = "trainer_state.pt"
MODEL_MARKERS = ("config.json", "adapter_config.json")


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
