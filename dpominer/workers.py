"""A JSONL file's records through one function on every core, in input order, with memory flat.

`score` and `pair` spend their time per record (parse, detect, fidelity, pair, serialise) and records
share nothing, so chunks of raw lines go to a process pool and come back in order. The main process
reads lines, keeps the checks that depend on earlier lines (duplicate ids, one prompt form; see
:func:`jsonl.admit`) and writes. At most ``2 × workers`` chunks are in flight, so memory does not
grow with the file. With one worker the same code runs in this process.

While records are worked on, Python's cycle collector runs every ``GC_ALLOCATIONS`` allocations instead
of every 700: each record makes thousands of short-lived objects that reference counting frees, and
collecting after every few hundred of them cost ~5 % of the time on short candidates.
"""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel

from .jsonl import InputError, admit, parse_line, read_lines

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

CHUNK_BYTES = 1 << 18  # a chunk of lines per task: large enough that pickling and IPC are noise
AUTO_SERIAL_BYTES = 8 << 20  # with workers=0 (auto), smaller inputs run in-process: a pool costs ~1 s to start
GC_ALLOCATIONS = 50_000  # the cycle collector's first threshold while records are worked on (Python's: 700)


class LineError(Exception):
    """Returned by ``work`` for a record to stop the run at its line: ``path:LINE: message``, with or
    without ``skip_invalid`` (a user check that fails, not a bad line). One message argument, so it pickles."""


class Outcome(NamedTuple):
    """A record's ``work`` result, with what the in-order checks need of the record: id and prompt form.
    A named tuple: a chunk's outcomes are unpickled in the main process, and a tuple's are the cheapest."""

    id: str | None
    conversational: bool | None
    result: Any


def worker_count(requested: int, path: Path) -> int:
    """``requested`` workers, or for 0 (auto): every core this process may use, one for small inputs."""
    if requested > 0:
        return requested
    try:
        small = path.stat().st_size < AUTO_SERIAL_BYTES
    except OSError:
        small = True  # reading will report the problem
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 1 if small else cores


def _run_chunk(model: type[M], work: Callable[[list[M]], list[Any]], lines: list[tuple[int, bytes]]):
    """(line number, Outcome or None, problem or None) of every line: what :func:`jsonl.admit` takes."""
    parsed = [(lineno, *parse_line(raw, model)) for lineno, raw in lines]
    results = iter(work([record for _, record, _ in parsed if record is not None]))
    return [(lineno, None if record is None else Outcome(getattr(record, "id", None),
                                                          getattr(record, "conversational", None), next(results)),
             problem) for lineno, record, problem in parsed]


def _chunks(lines: Iterator[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    chunk, size = [], 0
    for line in lines:
        chunk.append(line)
        size += len(line[1])
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def map_jsonl(path: Path, model: type[M], work: Callable[[list[M]], list[T | LineError]], *, workers: int = 1,
              skip_invalid: bool = False, on_skip: Callable[[str], None] | None = None,
              on_line: Callable[[bytes], None] | None = None,
              check: Callable[[Outcome], None] | None = None) -> Iterator[T]:
    """The result of every good record of ``path``, in file order; bad lines as :func:`jsonl.iter_jsonl`
    treats them (``check`` sees an :class:`Outcome`). ``work`` takes a chunk's records and returns one
    result per record, in order (a chunk at a time, so it can run each stage over all of them); a
    :class:`LineError` result stops the run at its record's line. ``work`` must be pure and picklable:
    a module-level function, or a partial of one."""
    lines = read_lines(path, on_line)
    if workers <= 1:
        with _few_collections():
            parsed = (row for chunk in _chunks(lines) for row in _run_chunk(model, work, chunk))
            yield from _results(path, admit(path, parsed, skip_invalid=skip_invalid, on_skip=on_skip, check=check))
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker) as pool, \
            _few_collections():  # the results unpickled here are short-lived too
        try:
            parsed = _in_order(pool, model, work, _chunks(lines), in_flight=2 * workers)
            yield from _results(path, admit(path, parsed, skip_invalid=skip_invalid, on_skip=on_skip, check=check))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # a bad line or ^C: do not finish the queue first
            raise


@contextmanager
def _few_collections():
    """The cycle collector at ``GC_ALLOCATIONS`` for the block, then as it was."""
    before = gc.get_threshold()
    gc.set_threshold(GC_ALLOCATIONS, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _start_worker() -> None:
    """A pool process: the collector at ``GC_ALLOCATIONS``, and the objects of the imports it starts
    with moved out of its sight (:func:`gc.freeze`), so a full collection does not walk them."""
    gc.set_threshold(GC_ALLOCATIONS, *gc.get_threshold()[1:])
    gc.freeze()


def _results(path: Path, admitted: Iterator[tuple[Outcome, int]]) -> Iterator[Any]:
    for outcome, lineno in admitted:
        if isinstance(outcome.result, LineError):
            raise InputError(f"{path}:{lineno}: {outcome.result}")
        yield outcome.result


def _in_order(pool: ProcessPoolExecutor, model: type[M], work: Callable[[list[M]], list[Any]],
              chunks: Iterator[list[tuple[int, bytes]]], in_flight: int):
    pending: deque[Future] = deque()
    for chunk in chunks:
        pending.append(pool.submit(_run_chunk, model, work, chunk))
        if len(pending) >= in_flight:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()
