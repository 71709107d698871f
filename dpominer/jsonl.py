"""Streaming JSONL I/O every stage shares, and the one-line user error.

Every stage reads and writes JSONL one record at a time, so memory stays flat in the number of
documents. Reading reports bad input as ``path:LINE: what is wrong``; writing goes to a temporary
file that is renamed into place only when the whole output is complete.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError


class InputError(Exception):
    """Bad user input, reported as one line (``path:LINE: message``) and exit code 1."""


# ---------------------------------------------------------------------------------------------- reading

M = TypeVar("M", bound=BaseModel)


def first_error(err: ValidationError) -> tuple[str, str]:
    """(dotted location, message) of a validation error's first problem: the one line users see."""
    first = err.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["msg"].removeprefix("Value error, ")


def _describe(err: ValidationError) -> str:
    where, msg = first_error(err)
    return f"{where}: {msg}" if where else msg


def iter_jsonl(
    path: str | Path,
    model: type[M],
    *,
    skip_invalid: bool = False,
    on_skip: Callable[[str], None] | None = None,
    unique_ids: bool = True,
    on_line: Callable[[bytes], None] | None = None,
    check: Callable[[M], None] | None = None,
    allow_empty: bool = False,
) -> Iterator[M]:
    """Stream ``model`` records from a JSONL file, one line at a time.

    Blank lines are ignored. A bad line raises :class:`InputError` naming ``path:LINE`` unless
    ``skip_invalid``, in which case ``on_skip`` gets the message and reading goes on. Duplicate ids
    are bad lines too (only 8-byte digests of ids are kept, so the check costs little memory).
    ``on_line`` gets every raw line read (for a progress bar and a content hash); ``check`` may
    raise ValueError on a parsed record to reject its line the same way. ``allow_empty`` accepts a
    file with no records at all (an empty shard), though not one whose every line is bad.
    """
    parsed = ((lineno, *parse_line(raw, model)) for lineno, raw in read_lines(path, on_line))
    for record, _ in admit(path, parsed, skip_invalid=skip_invalid, on_skip=on_skip, unique_ids=unique_ids,
                           check=check, allow_empty=allow_empty):
        yield record


def read_lines(path: str | Path, on_line: Callable[[bytes], None] | None = None) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of every non-blank line; ``on_line`` sees every line, blank ones too."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            if on_line is not None:
                on_line(raw)
            if raw.strip():
                yield lineno, raw


def parse_line(raw: bytes, model: type[M]) -> tuple[M | None, str | None]:
    """(the record, None) or (None, what is wrong with the line)."""
    try:
        data = orjson.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return model.model_validate(data), None
    except UnicodeDecodeError as exc:
        return None, f"invalid UTF-8 at byte {exc.start} of the line"
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"
    except ValidationError as exc:
        return None, _describe(exc)
    except (TypeError, ValueError) as exc:
        return None, str(exc)


def admit(path: str | Path, parsed: Iterable[tuple[int, Any, str | None]], *, skip_invalid: bool = False,
          on_skip: Callable[[str], None] | None = None, unique_ids: bool = True,
          check: Callable[[Any], None] | None = None, allow_empty: bool = False) -> Iterator[tuple[Any, int]]:
    """The checks that depend on the lines before (duplicate ids, ``check``), and skip-or-stop, over
    ``(line number, record, problem)`` in file order; yields ``(record, line number)`` of good lines."""
    seen: set[bytes] = set()
    good = skipped = 0
    for lineno, record, problem in parsed:
        if problem is None:
            try:
                rid = getattr(record, "id", None)
                if unique_ids and rid is not None:
                    digest = hashlib.blake2b(rid.encode(), digest_size=8).digest()
                    if digest in seen:
                        raise ValueError(f"duplicate id {rid!r}")
                    seen.add(digest)
                if check is not None:
                    check(record)
            except (TypeError, ValueError) as exc:
                problem = _describe(exc) if isinstance(exc, ValidationError) else str(exc)
        if problem is not None:
            message = f"{path}:{lineno}: {problem}"
            if not skip_invalid:
                raise InputError(message)
            skipped += 1
            if on_skip is not None:
                on_skip(message)
            continue
        good += 1
        yield record, lineno
    if good == 0 and not (allow_empty and skipped == 0):
        why = f"all {skipped} non-blank lines are invalid" if skipped else "the file is empty"
        raise InputError(f"{path}: no records ({why})")


# ---------------------------------------------------------------------------------------------- writing


def dumps(record: BaseModel | dict[str, Any]) -> bytes:
    data = record.model_dump(exclude_none=True) if isinstance(record, BaseModel) else record
    return orjson.dumps(data) + b"\n"


class _Checked:
    """A file handle whose OS errors (a full disk surfaces at write, flush or close) name the output."""

    def __init__(self, handle, shown: Path):
        self._handle, self._shown = handle, shown

    def write(self, data: bytes) -> int:
        try:
            return self._handle.write(data)
        except OSError as exc:
            from .guard import WriteError

            raise WriteError(self._shown, exc) from None

    def __getattr__(self, name: str):
        return getattr(self._handle, name)


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb"):
    """Open ``path`` for writing via a temp file (``.NAME.tmp-PID``) in the same folder; rename only on
    success. The current command's output guard is asked first (an output may not replace an input).

    A crash, an error or a signal leaves the final path untouched (no half-written file under its name)
    and no temp file behind; an OS error (full disk, read-only folder, no permission) is one line naming
    the path.
    """
    from .guard import WriteError, check_write, ensure_folder, temp_path

    path = Path(path)
    check_write(path)
    tmp = temp_path(path)
    try:
        ensure_folder(path.parent)
        try:
            handle = tmp.open(mode)
        except OSError as exc:
            raise WriteError(path, exc) from None
        try:
            yield _Checked(handle, path)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        except OSError as exc:  # a full disk often shows only at the flush
            raise WriteError(path, exc) from None
        finally:
            if not handle.closed:
                try:
                    handle.close()
                except OSError:
                    pass  # the error that brought us here is the one to report
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise WriteError(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    with atomic_output(path) as handle:
        handle.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
