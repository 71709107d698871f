"""The output guard: every file a command writes passes through here.

One :class:`Guard` per command run knows the run's inputs (files, model folders) and outputs, all
resolved through symlinks and ``..`` (and compared by inode, so a hard link is caught too). It refuses
an output that would replace an input, land inside an input model folder, or be written twice by the
same run — one line naming both paths, before anything is written. Every low-level writer
(:func:`jsonl.atomic_output`, the resumable partial files, checkpoints, metrics, caches) calls
:func:`check_write` for the path it is about to create, so a write the command did not declare is
refused the same way.

Here too: the run lock (one run per output; a second, ``--resume`` or not, is refused naming the
process holding it), the sweep of temporary files that dead processes left (``.OUT.tmp-PID``), and
SIGTERM/SIGHUP turned into an exception that unwinds like Ctrl-C, so every ``finally`` cleans up.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .jsonl import InputError


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like KeyboardInterrupt (not caught by ``except Exception``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.name = signal.Signals(signum).name


class WriteError(InputError):
    """An OS error while writing ``path``: one line naming the path and the cause."""

    def __init__(self, path: Path | str, exc: OSError, note: str = ""):
        super().__init__(f"{path}: cannot write: {describe_os_error(exc)}{note}")


def describe_os_error(exc: OSError) -> str:
    cause = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0)
    return f"{cause} ({code})" if code else cause


def ensure_folder(folder: Path) -> None:
    """Make ``folder`` (and its parents) as an output's folder; a file in the way is named as the cause."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise InputError(f"{folder}: cannot make this folder: {blocker} is a file (ENOTDIR)") from None


def temp_path(path: Path) -> Path:
    """Where ``path`` is staged before the rename: ``.NAME.tmp-PID`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


@dataclass
class _Input:
    shown: str
    path: Path
    ident: tuple[int, int] | None
    folder: bool  # a model folder: nothing may be written inside it


class Guard:
    """The inputs and outputs of one command run (see the module docstring)."""

    def __init__(self) -> None:
        self.inputs: list[_Input] = []
        self.outputs: dict[Path, str] = {}
        self.resumable: list[Path] = []  # partial files a stop leaves for --resume
        self.locks: list[RunLock] = []
        self.primary: str | None = None  # the main output, as given: named when the run is stopped

    # -------------------------------------------------------------------------------------- inputs

    def add_input(self, path: Path | str | None) -> None:
        if path is None:
            return
        real = _resolved(Path(path))
        self.inputs.append(_Input(str(path), real, _identity(real), real.is_dir()))

    def add_model(self, name: str | None) -> None:
        """A model given as a local folder (or an alias already materialised): nothing may land in it."""
        if not name:
            return
        from .models import local_model_dir

        folder = local_model_dir(name)
        if folder is not None:
            self.inputs.append(_Input(name, _resolved(folder), _identity(folder), True))

    # ------------------------------------------------------------------------------------- outputs

    def refusal(self, out: Path) -> str | None:
        """Why writing ``out`` is refused, or None."""
        real = _resolved(out)
        ident = _identity(real)
        for inp in self.inputs:
            if real == inp.path or (ident is not None and ident == inp.ident):
                what = "the input model folder" if inp.folder else "the input"
                return f"{out}: would replace {what} {inp.shown}; write the output elsewhere"
            if inp.folder and inp.path in real.parents:
                return f"{out}: lies inside the input model folder {inp.shown}; write the output elsewhere"
        return None

    def check(self, out: Path) -> None:
        why = self.refusal(out)
        if why is not None:
            raise InputError(why)

    def claim(self, out: Path, label: str, *, lock: bool = True, folder: bool = False,
              writes: tuple[str, ...] = ()) -> None:
        """Declare an output before anything is written: checked against the inputs and the other outputs,
        stale temporary files of dead processes swept, and (``lock``) the run lock taken.

        ``folder``: ``out`` is a folder the command fills; ``writes`` are the names it writes there
        (``*`` patterns allowed), each checked against the inputs too."""
        self.check(out)
        real = _resolved(out)
        for other, other_label in self.outputs.items():
            if other == real:
                raise InputError(f"{label} {out}: is also the {other_label}; give each output its own path")
        if folder:
            for inp in self.inputs:
                if not inp.folder and real in inp.path.parents and _written_in(inp.path.relative_to(real), writes):
                    raise InputError(f"{label} {out}: this run writes {inp.path.relative_to(real)} there, which is "
                                     f"the input {inp.shown}; write the output elsewhere")
        self.outputs[real] = label
        self.primary = self.primary or str(out)
        sweep_stale(real)
        if lock:
            self.locks.append(RunLock(real, shown=out))

    def release(self) -> None:
        while self.locks:
            self.locks.pop().release()


def _written_in(relative: Path, writes: tuple[str, ...]) -> bool:
    """Whether a file at ``relative`` (inside a folder output) is one the command writes: a top-level name
    matching one of ``writes``, or anything under a folder named there."""
    top = len(relative.parts) == 1
    return any((top and relative.match(pattern)) or (not top and relative.parts[0] == pattern) for pattern in writes)


# ------------------------------------------------------------------------------ the current run's guard

_ACTIVE: Guard | None = None


def active() -> Guard | None:
    return _ACTIVE


def check_write(path: Path) -> None:
    """Refuse a write the current command's guard would refuse (no guard: a library call, no check)."""
    if _ACTIVE is not None:
        _ACTIVE.check(path)


@contextmanager
def guarded() -> Iterator[Guard]:
    """The guard of one command run; SIGTERM/SIGHUP raise :class:`Interrupted` while it is active."""
    global _ACTIVE
    guard, before = Guard(), _ACTIVE
    _ACTIVE = guard
    try:
        with signals_as_interrupts():
            yield guard
    finally:
        guard.release()
        _ACTIVE = before


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGTERM (timeout, SLURM, docker stop) and SIGHUP unwind the stack as Ctrl-C does."""
    def stop(signum, frame):
        for sig in (signal.SIGTERM, signal.SIGHUP):  # the unwinding itself is not interrupted again
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------------------ temporary files

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(out: Path) -> list[Path]:
    """Remove ``.OUT.tmp-PID`` files and folders (and those inside a folder output) whose process is dead."""
    removed = []
    places = [(out.parent, f".{out.name}.tmp-*")]
    if out.is_dir():
        places += [(out, ".*.tmp-*"), (out / "checkpoints", ".*.tmp-*")]
    for folder, pattern in places:
        if not folder.is_dir():
            continue
        for stale in folder.glob(pattern):
            pid = stale.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


# --------------------------------------------------------------------------------------------- locks

class RunLock:
    """An exclusive ``flock`` on ``.OUT.lock`` beside the output, holding the owner's pid and host.

    The kernel drops it when the process dies (kill -9 included), so a stale file never blocks a run.
    A second run into the same output — with ``--resume`` or not — is refused, naming the holder."""

    def __init__(self, out: Path, shown: Path | None = None):
        shown = shown or out
        out = _resolved(out)  # `-o .` has no name of its own
        self.path = out.with_name(f".{out.name}.lock")
        ensure_folder(self.path.parent)  # the output's folder, made as the output would make it
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise InputError(f"{shown}: another dpominer run ({holder}) is writing it; wait for it to end, or "
                                 "stop it first") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False  # the holder removed it as we opened it: take a fresh one
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # while still held: nobody can be waiting on this inode
        os.close(self.fd)
        self.fd = None
