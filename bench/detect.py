"""Detector speed on 4 KB candidates with references, against a plain per-candidate baseline; and
detect + fidelity, in-process and as `dpominer score` over all cores, against the code before issue 13.

    python bench/detect.py [--n 2000] [--score-n 8000] [--baseline a70f01a|none] [--score-only]

``--score-only`` times only `dpominer score` (wall clock, ``--workers 1`` and every core): the
throughput a user sees, which on a quiet machine is the number to read.

Baseline (run side by side on the same candidates): what a tool without this detector does per
candidate — Whisper's compression ratio plus a straightforward tail-repeat check that tries every
unit length L up to 1,024 and counts copies backwards (as OCR pipelines do). Ours computes more
(periodicity, counters, seq-rep-n, tail compression, reference guard). Goal: ≥ 5,000 candidates/s
on one core for detection. Also: time on 1 MB adversarial strings (goal: well under a second).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

from baseline import BEFORE_ISSUE_13, ROOT, checkout, run_cli

from dpominer.degeneration import detect
from dpominer.fidelity import fidelity

DATA = Path(__file__).parent / "data"


def load_package(code: Path, name: str = "dpominer_baseline"):
    """The dpominer package found in ``code``, imported under another name (beside this checkout's)."""
    spec = importlib.util.spec_from_file_location(name, code / "dpominer" / "__init__.py",
                                                  submodule_search_locations=[str(code / "dpominer")])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.degeneration"), importlib.import_module(f"{name}.fidelity")


def write_records(path: Path, items: list[tuple[str, str, str]], per_doc: int = 8) -> Path:
    with path.open("w") as out:
        for start in range(0, len(items), per_doc):
            group = items[start:start + per_doc]
            cands = [{"index": i, "text": t, "finish_reason": f} for i, (t, f, _) in enumerate(group)]
            out.write(json.dumps({"id": f"d{start}", "prompt": "Transcribe.", "reference": group[0][2],
                                  "candidates": cands}) + "\n")
    return path


def baseline(text: str, max_unit: int = 1024) -> tuple[float, int]:
    data = text.strip().encode("utf-8")
    cr = len(data) / len(zlib.compress(data)) if data else 0.0
    n, best = len(text), 0
    for unit_len in range(1, min(max_unit, n // 2) + 1):
        unit, end, copies = text[n - unit_len :], n - unit_len, 1
        while end >= unit_len and text[end - unit_len : end] == unit:
            end -= unit_len
            copies += 1
        best = max(best, copies * unit_len if copies >= 3 else 0)
    return cr, best


def candidates(n: int, seed: int = 0, per_doc: int = 8) -> list[tuple[str, str, str]]:
    """(text, finish_reason, reference): 4 KB each, a third of them looping somewhere in the tail,
    ``per_doc`` candidates sharing each reference (as `sample -n 8` gives)."""
    rng = random.Random(seed)
    texts = [json.loads(line)["text"] for line in (DATA / "passages.jsonl").open()]
    out = []
    for i in range(n):
        if i % per_doc == 0:
            reference = " ".join(rng.sample(texts, 12))[:4096]
        if i % 3 == 0:
            cut = rng.randrange(1000, 3500)
            unit = reference[rng.randrange(0, 500) :][: rng.choice([3, 12, 40, 120])]
            text = (reference[:cut] + unit * 400)[:4096]
            out.append((text, "length", reference))
        else:
            words = reference.split()
            swapped = " ".join(w if rng.random() > 0.02 else rng.choice(words) for w in words)
            out.append((swapped[:4096], "stop", reference))
    return out


def rate(fn, items, repeats: int = 3) -> float:
    """Candidates per second of this process's CPU time, best of ``repeats``: on a shared machine wall
    time measures the neighbours as much as the detector."""
    best = 0.0
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(*item)
        best = max(best, len(items) / max(time.process_time() - start, 1e-9))
    return best


def score_rates(items, baseline: Path | None, ref: str = BEFORE_ISSUE_13) -> None:
    """`dpominer score` end to end (parse, detect, fidelity, write) in a fresh process per run; the
    baseline (``ref``) with its own defaults (a baseline with ``--workers`` uses all cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        src = write_records(Path(tmp) / "c.jsonl", items)
        runs = [(f"baseline {ref}", baseline, ())] if baseline else []
        runs += [("this checkout, 1 worker", ROOT, ("--workers", "1")),
                 (f"this checkout, {cores} workers", ROOT, ("--workers", str(cores)))]
        times = {}
        for label, code, flags in runs:
            wall, cpu = times[label] = run_cli(code, "score", str(src), "-o", str(Path(tmp) / "s.jsonl"), *flags)
            print(f"  score {label:30} {len(items) / wall:8.0f} cand/s wall   {len(items) / cpu:8.0f} cand/CPU-s")
        if baseline:
            base = times[runs[0][0]]
            print("  wall-clock ratio to baseline  " + "   ".join(f"{label.split(', ')[-1]}: {base[0] / t[0]:.2f}×"
                                                                  for label, t in list(times.items())[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--score-n", type=int, default=8000, help="candidates for the `dpominer score` runs")
    parser.add_argument("--baseline", default=BEFORE_ISSUE_13, help="git ref of the code to compare against "
                                                                     "(none: no baseline)")
    parser.add_argument("--score-only", action="store_true", help="only the `dpominer score` runs")
    args = parser.parse_args()
    base_code = checkout(args.baseline) if args.baseline != "none" else None
    if args.score_only:
        score_rates(candidates(args.score_n, seed=1), base_code, args.baseline)
        return
    items = candidates(args.n)
    fidelity(*items[0][::2])  # imports and caches warmed outside the timings
    ours = rate(lambda t, f, r: detect(t, finish_reason=f, reference=r), items)
    base = rate(lambda t, f, r: baseline(t), items)
    with_cer = rate(lambda t, f, r: (detect(t, finish_reason=f, reference=r), fidelity(t, r)), items[: args.n // 4])
    print(f"{args.n} candidates of 4 KB, 8 per reference, one core")
    print(f"  detect (ours)                 {ours:8.0f} cand/s   goal ≥ 5000")
    print(f"  baseline: Whisper CR + naive  {base:8.0f} cand/s")
    print(f"  ratio ours / baseline         {ours / base:8.2f}×")
    print(f"  detect + fidelity (CER, …)    {with_cer:8.0f} cand/s   (CPU time, one core)")
    if base_code is not None:
        old_degeneration, old_fidelity = load_package(base_code)
        old_fidelity.fidelity(*items[0][::2])
        old = rate(lambda t, f, r: (old_degeneration.detect(t, finish_reason=f, reference=r),
                                    old_fidelity.fidelity(t, r)), items[: args.n // 4])
        print(f"  same, {args.baseline:10}             {old:8.0f} cand/s   ratio ours / baseline {with_cer / old:.2f}×")
    score_rates(candidates(args.score_n, seed=1), base_code, args.baseline)
    adversarial = {
        '"a" * 10**6': "a" * 10**6,
        "random 1 MB": "".join(random.Random(1).choices("abcdefghij klmnop\n", k=10**6)),
        "one 1 MB loop (unit 250)": ("".join(random.Random(2).choices("abcdef ", k=250))) * 4000,
    }
    for name, text in adversarial.items():
        start = time.perf_counter()
        verdict = detect(text, finish_reason="length").verdict
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        baseline(text)
        base_s = time.perf_counter() - start
        print(f"  {name:28} ours {ours_s * 1000:7.1f} ms ({verdict})   baseline {base_s * 1000:9.1f} ms")


if __name__ == "__main__":
    main()
