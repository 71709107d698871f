"""`dpominer pair` on many synthetic candidates: wall time and peak memory, this checkout against the
code before issue 13 (one core, slower fidelity), side by side on the same files in the same run.

    python bench/pair_scale.py [--n 1000000] [--baseline a70f01a|none] [--workers 0]

Each run is a fresh `python -m dpominer pair` process; peak RSS is that process's (os.wait4), which
with workers is the largest of the main process and its pool. Memory must not grow with N: the ratio
peak(N) / peak(N/10) should stay near 1 (the per-document state is an 8-byte digest per id for the
duplicate check: ~0.1 GB per million docs). On a shared machine, read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from baseline import BEFORE_ISSUE_13, ROOT, checkout

DATA = Path(__file__).parent / "data"
PER_DOC = 8


def write_candidates(path: Path, n_candidates: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    texts = [json.loads(line)["text"] for line in (DATA / "passages.jsonl").open()]
    with path.open("w") as out:
        for doc in range(n_candidates // PER_DOC):
            reference = rng.choice(texts)[:300]
            cands = []
            for index in range(PER_DOC):
                if index % 4 == 0:  # a loop
                    text = reference[:100] + (reference[100:130] * 12)
                    finish = "length"
                else:
                    words = reference.split()
                    text = " ".join(w if rng.random() > 0.05 else rng.choice(words) for w in words)
                    finish = "stop"
                cands.append({"index": index, "text": text, "finish_reason": finish})
            record = {"id": f"d{doc}", "prompt": "Transcribe.", "reference": reference, "candidates": cands}
            out.write(json.dumps(record) + "\n")


def file_digest(path: Path) -> bytes:
    """The file's blake2b, read in blocks: holding the outputs here would show up in the next child's
    peak RSS (a child forked from this process starts with its pages, and ru_maxrss keeps that)."""
    digest = hashlib.blake2b()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def run_pair(code: Path, src: Path, dst: Path, *flags: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one `dpominer pair` process running the package in
    ``code``; CPU time includes its pool's workers (waited for, so counted in its rusage)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "dpominer", "pair", str(src), "-o", str(dst), *flags],
                             env=os.environ | {"PYTHONPATH": str(code)}, cwd=code,  # see baseline.run_cli
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"pair failed ({code}): exit {child.returncode}")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="candidates in the large run")
    parser.add_argument("--baseline", default=BEFORE_ISSUE_13, help="git ref of the code to compare against "
                                                                     "(none: no baseline)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser.add_argument("--workers", default=str(cores),
                        help="--workers of this checkout's all-core run (default: every core, at both sizes, so "
                             "the memory ratio compares pool with pool)")
    args = parser.parse_args()
    base = checkout(args.baseline) if args.baseline != "none" else None
    runs = [(f"baseline {args.baseline}", base, ())] if base else []
    runs += [("this checkout, 1 worker", ROOT, ("--workers", "1")),
             (f"this checkout, --workers {args.workers}", ROOT, ("--workers", args.workers))]
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[tuple[str, int], tuple[float, float, float]] = {}
        outputs: dict[str, bytes] = {}  # digests: a forked child's peak RSS counts what this process holds
        for n in (args.n // 10, args.n):
            src = Path(tmp) / f"cands-{n}.jsonl"
            write_candidates(src, n)
            mb = src.stat().st_size / 2**20
            print(f"{n:,} candidates ({mb:.0f} MB):")
            for label, code, flags in runs:
                dst = Path(tmp) / "pairs.jsonl"
                wall, cpu, peak = results[label, n] = run_pair(code, src, dst, *flags)
                outputs[label] = file_digest(dst)
                print(f"  {label:34} {wall:7.1f} s wall {n / wall:7.0f} cand/s   {cpu:7.1f} s CPU "
                      f"{n / cpu:7.0f} cand/CPU-s   peak RSS {peak:5.0f} MiB")
            ours = [data for label, data in outputs.items() if label.startswith("this checkout")]
            print(f"  this checkout's outputs identical for every --workers: {len(set(ours)) == 1}; identical to "
                  f"the baseline's: {len(set(outputs.values())) == 1} (a70f01a predates coverage and the omission "
                  "verdict: it computes and writes less)")
            src.unlink()
        fast = runs[-1][0]
        if base:
            label, one = runs[0][0], runs[1][0]
            print(f"at {args.n:,}, against {label}: wall {results[label, args.n][0] / results[fast, args.n][0]:.2f}x "
                  f"faster on all cores; CPU per candidate {results[label, args.n][1] / results[one, args.n][1]:.2f}x "
                  "less on 1 worker (the load-independent ratio)")
        print(f"peak RSS ratio N / (N/10), {fast}: {results[fast, args.n][2] / results[fast, args.n // 10][2]:.2f}"
              "   (flat memory => about 1)")


if __name__ == "__main__":
    main()
