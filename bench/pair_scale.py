"""`dpominer pair` on many synthetic candidates: wall time and peak memory at N and at N/10.

    python bench/pair_scale.py [--n 1000000]

Each run is a fresh `python -m dpominer pair` process; peak RSS comes from getrusage of the child.
Memory must not grow with N: the printed ratio peak(N) / peak(N/10) should stay near 1 (the only
per-document state is an 8-byte digest per id for the duplicate check: ~0.1 GB per million docs).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def run_pair(src: Path, dst: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dpominer", "pair", str(src), "-o", str(dst)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:
        print("  (peak RSS not above an earlier child's; order the runs small → large)")
    return wall, peak_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="candidates in the large run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for n in (args.n // 10, args.n):
            src = Path(tmp) / f"cands-{n}.jsonl"
            write_candidates(src, n)
            wall, peak = run_pair(src, Path(tmp) / f"pairs-{n}.jsonl")
            results[n] = (wall, peak)
            mb = src.stat().st_size / 2**20
            print(f"  {n:>9,} candidates ({mb:6.0f} MB): {wall:7.1f} s, {n / wall:6.0f} cand/s, "
                  f"peak RSS {peak:6.0f} MiB")
            src.unlink()
        small, large = results[args.n // 10], results[args.n]
        print(f"peak RSS ratio N / (N/10): {large[1] / small[1]:.2f}   (flat memory ⇒ ≈ 1)")


if __name__ == "__main__":
    main()
