"""Resumable outputs, for `sample`, `score --judge` and (through `sample`) `eval`.

Records go to ``OUT.partial``, appended and fsynced a chunk at a time; the file is renamed to ``OUT``
only when every record is in. Beside it, ``OUT.partial.json`` holds the settings that decide what a
record contains (model, seed, sampling; judge model, rubric…): ``--resume`` compares them with the new
run's and refuses a change, naming it, so one file never mixes two configurations. Resuming cuts a torn
last line (a kill mid-write) and keeps every complete record. The run lock is taken before the partial
is looked at: a second run, ``--resume`` or not, cannot truncate or append to a partial in use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .guard import RunLock, WriteError, active, check_write, ensure_folder, temp_path
from .jsonl import InputError


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def recover(partial: Path) -> set[str]:
    """Ids of the complete records in ``partial``; a torn last line (a kill mid-write) is cut off."""
    done: set[str] = set()
    with partial.open("r+b") as handle:
        good_end = 0
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # torn: written without its newline
            try:
                done.add(orjson.loads(raw)["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{partial}: a corrupt record before the end; delete the file to start over") from None
            good_end += len(raw)
        handle.truncate(good_end)
    return done


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}{key}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def config_change(before: dict[str, Any], now: dict[str, Any], *, known_only: bool = False) -> str | None:
    """The first setting that differs, as ``key was X, now Y``; None when they agree. ``known_only``:
    compare only what ``before`` records (a partial without its settings file records less)."""
    old, new = _flat(before), _flat(now)
    for key in sorted(old if known_only else set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key} was {_short(old.get(key))}, now {_short(new.get(key))}"
    return None


class PartialOutput:
    """``OUT.partial`` (+ its settings file) for one resumable run; see the module docstring.

    ``config`` holds what must not change on ``--resume``; ``reopen_finished`` lets ``--resume`` take up
    a finished ``OUT`` again (more documents since), with the settings its ``OUT.meta.json`` records.
    """

    def __init__(self, output: Path, config: dict[str, Any], *, lock: bool = True):
        self.output = output
        self.path = partial_path(output)
        self.settings = output.with_name(output.name + ".partial.json")
        self.config = config
        self.lock: RunLock | None = None
        self._lock_wanted = lock
        self._handle = None
        self._created = False  # this run made the partial file (and wrote nothing yet, if it stays empty)

    def start(self, *, resume: bool, reopen_finished: bool = False,
              recorded: dict[str, Any] | None = None) -> set[str]:
        """Take the lock, check and recover what an earlier run left; returns the ids already done.

        ``recorded``: the settings to compare with when the partial has no settings file (one written
        by hand, or a finished output whose meta file is the record)."""
        check_write(self.path)
        check_write(self.output)
        ensure_folder(self.path.parent)
        if self._lock_wanted and self.lock is None:
            self.lock = RunLock(self.output)
        if (guard := active()) is not None:
            guard.resumable.append(self.path)
        if resume and reopen_finished and self.output.exists() and not self.path.exists():
            os.replace(self.output, self.path)  # a finished file resumes as a partial one (maybe more docs now)
        done: set[str] = set()
        if self.path.exists():
            if not resume:
                raise InputError(f"{self.path}: left by an interrupted run; pass --resume to continue it, or delete it")
            before = self._recorded()
            if before is not None:
                change = config_change(before, self.config)
            else:
                change = None if recorded is None else config_change(recorded, self.config, known_only=True)
            if change is not None:
                raise InputError(f"--resume: {change} ({self.path}); resume with the same settings, or delete "
                                 "the partial file to start over")
            done = recover(self.path)
        self._write_settings()
        self._created = not self.path.exists()
        self._handle = self._open()  # from here on a stop leaves a partial file that --resume takes up
        return done

    def _recorded(self) -> dict[str, Any] | None:
        if not self.settings.exists():
            return None
        try:
            return orjson.loads(self.settings.read_bytes())
        except orjson.JSONDecodeError:
            raise InputError(f"{self.settings}: unreadable; delete it and {self.path} to start over") from None

    def _write_settings(self) -> None:
        tmp = temp_path(self.settings)
        try:
            tmp.write_bytes(orjson.dumps(self.config, option=orjson.OPT_SORT_KEYS))
            os.replace(tmp, self.settings)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise WriteError(self.settings, exc) from None

    def append(self, lines: Iterable[bytes]) -> None:
        """Write whole records (each ending in a newline) and make them durable: a chunk on disk is a chunk
        a resumed run will not redo."""
        if self._handle is None:
            self._handle = self._open()
        try:
            self._handle.write(b"".join(lines))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise WriteError(self.path, exc, "; the records before this chunk are kept: rerun with --resume "
                                             "once there is room") from None

    def _open(self):
        try:
            return self.path.open("ab")
        except OSError as exc:
            raise WriteError(self.path, exc) from None

    def finish(self) -> None:
        """Every record is in: rename to ``OUT``, drop the settings file, release the lock."""
        if self._handle is None:
            self._handle = self._open()  # nothing to add: the file still becomes the output
        self._handle.close()
        self._handle = None
        try:
            os.replace(self.path, self.output)
        except OSError as exc:
            raise WriteError(self.output, exc) from None
        self.settings.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Stop without finishing (an error or a signal): the partial stays, resumable; the lock goes. A
        partial this run made and wrote nothing to is removed: there is nothing to resume."""
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass  # the chunk that failed is cut off as a torn line on --resume
            self._handle = None
            if self._created and self.path.exists() and self.path.stat().st_size == 0:
                self.path.unlink()
                self.settings.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None
