"""Speed work must not change a byte: this checkout against a named baseline commit, on the same inputs.

    python bench/equivalence.py [--baseline 272abc5] [--n 3000] [--cli-docs 4000]

1. In-process, per candidate: ``detect`` (verdict, kind, why, span, unit, severity, every signal),
   ``fidelity`` (every metric) and ``word_ratio`` of both codes, compared as dicts, on the labelled
   synthetic set (several seeds), the real SmolLM2 sets (with token ids and log-probs), the 4 KB bench
   candidates, the `pair` bench's short candidates and hostile text (CJK, Thai, combining marks, every
   kind of Unicode space, astral characters, digits, long single-character runs, empty and blank
   strings), each against its reference, another text's reference, and none.
2. End to end: `dpominer score` and `dpominer pair` of both codes on candidates files built from the
   same texts (8 per document, some repeated within their document as sampling repeats itself; the
   prompt as a string, then as a chat message); this checkout with ``--workers 1`` and ``--workers 2``.
   The output files must be byte-identical.

Prints the counts compared and every difference found (none: exit 0).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import synthetic
from baseline import ROOT, checkout, run_cli
from detect import candidates as bench_candidates
from detect import load_package

import dpominer.degeneration as new_degeneration
import dpominer.fidelity as new_fidelity

BEFORE_SPEED = "272abc5"  # main before the issue-13 speed work (point 8, second pass)
DATA = Path(__file__).parent / "data"
SPACES = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
ALPHABETS = ["abcde fgh", "abc 123 456\n", "東京は日本の首都です。", "ภาษาไทยง่าย ", "e\u0301 a\u0300 ", "😀😃 x y",
             "ab" + SPACES, "한국어 텍스트 ", "ꦲꦏ ꦱ", "- item 1\n- item 2\n"]


def hostile(n: int, seed: int = 0) -> list[tuple[str, str | None, str | None]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        alphabet = "".join(rng.sample(ALPHABETS, rng.randrange(1, 4)))
        text = "".join(rng.choices(alphabet, k=rng.randrange(0, 600)))
        if i % 5 == 0:  # a loop of some unit, cut mid-unit
            unit = "".join(rng.choices(alphabet, k=rng.randrange(1, 40)))
            text += (unit * 200)[: rng.randrange(0, 3000)]
        if i % 11 == 0:
            text = rng.choice(["", " ", "\n\n", "a" * rng.randrange(1, 5000), "0" * 300, "1 2 3 " * 200])
        reference = "".join(rng.choices(alphabet, k=rng.randrange(0, 400))) if i % 3 else None
        if i % 7 == 0 and reference is not None:
            reference = text[: rng.randrange(0, len(text) + 1)] + reference[:50]
        out.append((text, rng.choice(["stop", "length", "repetition", None]), reference))
    return out


def corpus(n: int) -> list[dict]:
    """Candidates: text, finish_reason, reference and, from the real sets, token ids and log-probs."""
    rows = []
    for seed in range(3):
        rows += [{"text": r["text"], "finish_reason": r["finish_reason"], "reference": r["reference"]}
                 for r in synthetic.build(n, seed=seed)]
    for name in ("real_smollm2", "real_smollm2_heldout", "real_smollm2_v2"):
        for line in (DATA / f"{name}.jsonl").open():
            r = json.loads(line)
            rows.append({k: r.get(k) for k in ("text", "finish_reason", "reference", "token_ids", "token_logprobs")})
    rows += [{"text": t, "finish_reason": f, "reference": r} for t, f, r in bench_candidates(n // 2, seed=3)]
    rng = random.Random(4)
    texts = [json.loads(line)["text"] for line in (DATA / "passages.jsonl").open()]
    for i in range(n):  # the `pair` bench's short candidates
        reference = rng.choice(texts)[:300]
        text = reference[:100] + reference[100:130] * 12 if i % 4 == 0 else \
            " ".join(w if rng.random() > 0.05 else rng.choice(reference.split()) for w in reference.split())
        rows.append({"text": text, "finish_reason": "length" if i % 4 == 0 else "stop", "reference": reference})
    rows += [{"text": t, "finish_reason": f, "reference": r} for t, f, r in hostile(n)]
    return rows


def _outputs(degeneration, fid, text: str, reference: str | None, kwargs: dict) -> list:
    try:
        out = [degeneration.detect(text, reference=reference, **kwargs).model_dump()]
        if reference is not None:
            out += [fid.fidelity(text, reference), fid.word_ratio(text, reference)]
        return out
    except Exception as exc:  # noqa: BLE001 — a crash is a result to compare too
        return [f"{type(exc).__name__}: {exc}"]


def compare_functions(rows: list[dict], old_degeneration, old_fidelity) -> int:
    """Differences of detect / fidelity / word_ratio between the two codes (printed, counted). Where
    the baseline crashed and this checkout did not, the case is counted apart (a fixed bug)."""
    diffs = checked = fixed = 0
    references = [r["reference"] for r in rows if r["reference"]]
    rng = random.Random(5)
    for row in rows:
        other = rng.choice(references)
        for reference in {row["reference"], other, None}:
            kwargs = {"token_ids": row.get("token_ids"), "finish_reason": row["finish_reason"],
                      "token_logprobs": row.get("token_logprobs")}
            results = [_outputs(old_degeneration, old_fidelity, row["text"], reference, kwargs),
                       _outputs(new_degeneration, new_fidelity, row["text"], reference, kwargs)]
            checked += 1
            if isinstance(results[0][0], str) and not isinstance(results[1][0], str):
                fixed += 1
                if fixed <= 3:
                    print(f"  baseline crashed, this checkout did not: {results[0][0]} "
                          f"(text {row['text'][:40]!r}, reference {str(reference)[:40]!r})")
            elif results[0] != results[1]:
                diffs += 1
                if diffs <= 5:
                    print(f"  DIFF on {row['text'][:60]!r} / reference {str(reference)[:40]!r}:\n"
                          f"    baseline {results[0]}\n    this     {results[1]}")
    print(f"  functions: {checked} (candidate, reference) cases, {diffs} differ, {fixed} where only the "
          "baseline crashed")
    return diffs


def candidate_file(rows: list[dict], path: Path, old_fidelity, per_doc: int = 8, messages: bool = False) -> Path:
    """8 candidates per document, sharing the first one's reference; candidates the baseline cannot
    score against that reference (the crash counted above) are left out, so both codes run to the end.
    Every third document repeats candidates, as sampling does: one exactly (its scores may be reused),
    one with another finish reason and one without its token ids (they may not). ``messages``: the
    prompt as a chat message (a file holds one prompt form)."""
    def scorable(row: dict, reference: str | None) -> bool:
        try:
            return reference is None or old_fidelity.fidelity(row["text"], reference) is not None
        except Exception:  # noqa: BLE001
            return False

    with path.open("w") as out:
        for doc, start in enumerate(range(0, len(rows), per_doc)):
            group = [r for r in rows[start:start + per_doc] if scorable(r, rows[start]["reference"])]
            if not group or group[0] is not rows[start]:
                continue
            if doc % 3 == 0:
                flipped = "length" if group[0]["finish_reason"] == "stop" else "stop"
                group += [group[-1], group[0] | {"finish_reason": flipped}, group[-1] | {"token_ids": None}]
            cands = [{"index": i, "text": r["text"], "finish_reason": r["finish_reason"] or "stop",
                      **({"token_ids": r["token_ids"]} if r.get("token_ids") else {})} for i, r in enumerate(group)]
            prompt = ({"messages": [{"role": "user", "content": "Transcribe."}]} if messages
                      else {"prompt": "Transcribe."})
            record = {"id": f"d{start}", **prompt, "candidates": cands}
            if group[0]["reference"] is not None:
                record["reference"] = group[0]["reference"]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def compare_cli(rows: list[dict], base: Path, old_fidelity) -> int:
    diffs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for form in ("prompt", "messages"):
            src = candidate_file(rows, Path(tmp) / f"{form}.jsonl", old_fidelity, messages=form == "messages")
            for stage in ("score", "pair"):
                outputs = {}
                for label, code, flags in (("baseline", base, ("--workers", "1")),
                                           ("1 worker", ROOT, ("--workers", "1")),
                                           ("2 workers", ROOT, ("--workers", "2"))):
                    dst = Path(tmp) / f"{stage}-{label.replace(' ', '')}.jsonl"
                    run_cli(code, stage, str(src), "-o", str(dst), *flags)
                    outputs[label] = dst.read_bytes()
                same = [label for label, data in outputs.items() if data == outputs["baseline"]]
                lines = outputs["baseline"].count(b"\n")
                print(f"  {stage} ({form}): {lines} lines; identical to the baseline: {', '.join(same[1:]) or 'none'}")
                diffs += len(outputs) - len(same)
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default=BEFORE_SPEED, help="git ref of the code to compare against")
    parser.add_argument("--n", type=int, default=3000, help="synthetic / hostile candidates per kind")
    parser.add_argument("--no-cli", action="store_true", help="compare the functions only")
    args = parser.parse_args()
    base = checkout(args.baseline)
    if base is None:
        raise SystemExit("no baseline to compare against")
    old_degeneration, old_fidelity = load_package(base)
    rows = corpus(args.n)
    print(f"this checkout vs {args.baseline}, {len(rows)} candidates")
    diffs = compare_functions(rows, old_degeneration, old_fidelity)
    if not args.no_cli:
        diffs += compare_cli(rows, base, old_fidelity)
    print("no difference" if not diffs else f"{diffs} differences")
    raise SystemExit(1 if diffs else 0)


if __name__ == "__main__":
    main()
