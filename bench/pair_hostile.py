"""`dpominer pair` vs `dpominer score` on hostile sizes: records holding a few different multi-megabyte loops.

    python bench/pair_hostile.py [--mb 2] [--loops 4] [--records 2]

`pair` scores on the way and then compares the rejected candidates with each other (near-duplicates
collapse). That comparison must stay bounded, so `pair` costs about what `score` does on any input.
Each command runs once as a fresh process on the same file; the printed ratio pair ÷ score is the
number to watch (baseline: `score`, same input, same run; goal ≤ 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNITS = ["the same words again and again, ", "quite another sentence here; ", "1. 2. 3. 4. 5. ",
         "<td>cell</td><td>cell</td>", "lorem ipsum dolor sit amet ", "ab"]


def write_records(path: Path, mb: float, loops: int, records: int) -> int:
    size = int(mb * 1_000_000)
    with path.open("w") as out:
        for r in range(records):
            units = [UNITS[i % len(UNITS)] for i in range(loops)]
            cands = [{"index": i, "text": f"Record {r}, loop {i}: " + unit * (size // len(unit)),
                      "finish_reason": "length"} for i, unit in enumerate(units)]
            cands.append({"index": loops, "text": "A short clean answer.", "finish_reason": "stop"})
            out.write(json.dumps({"id": f"r{r}", "prompt": "Transcribe the page.", "candidates": cands}) + "\n")
    return path.stat().st_size


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dpominer", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=2.0, help="characters per loop, in millions")
    parser.add_argument("--loops", type=int, default=4, help="different loops per record")
    parser.add_argument("--records", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "cands.jsonl"
        size = write_records(src, args.mb, args.loops, args.records)
        score = timed(["score", str(src), "-o", str(Path(tmp) / "scored.jsonl")])
        pair = timed(["pair", str(src), "-o", str(Path(tmp) / "pairs.jsonl")])
    print(f"input: {args.records} records × {args.loops} loops of {args.mb:g} M chars ({size / 1e6:.1f} MB)")
    print(f"score {score:.2f} s · pair {pair:.2f} s · pair ÷ score ×{pair / score:.2f} (goal ≤ 2)")


if __name__ == "__main__":
    main()
