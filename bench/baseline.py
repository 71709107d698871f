"""The named baseline the speed benches compare against: dpominer as it was at a git commit.

`checkout(ref)` exports that commit's tree (``git archive``) into a cache folder once; run it with
``PYTHONPATH=<folder>``, side by side with this checkout, on the same inputs in the same run.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE_ISSUE_13 = "a70f01a"  # score and pair on one core, BLEU-4 over word tuples, full-table distances


def checkout(ref: str) -> Path | None:
    """A folder holding ``dpominer/`` as of ``ref``, or None when this is not a git checkout."""
    target = Path(tempfile.gettempdir()) / f"dpominer-baseline-{ref}"
    if (target / "dpominer").is_dir():
        return target
    try:
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "dpominer"], check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  (no baseline: cannot export {ref}: {exc})")
        return None
    partial = target.with_name(target.name + f".tmp-{os.getpid()}")
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(partial, filter="data")
    os.replace(partial, target)
    return target


def run_cli(code: Path, *args: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``python -m dpominer ARGS`` with the package from ``code``; CPU time
    includes the processes it started and waited for (a pool's workers). It runs in ``code``: ``-m`` puts
    the working folder first on sys.path, so run from a checkout it would import that checkout instead."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "dpominer", *args], env=os.environ | {"PYTHONPATH": str(code)},
                             cwd=code, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"dpominer {args[0]} failed ({code}): exit {child.returncode}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime
