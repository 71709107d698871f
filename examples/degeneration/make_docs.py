"""Build the transcription documents: real technical prose from this Python's standard-library
docstrings (PSF licence, permissive), one paragraph per document, the paragraph as the reference.

    python examples/degeneration/make_docs.py

Writes mining.jsonl and heldout.jsonl beside this file. The split is by module — every paragraph of a
module lands on the same side — so held-out documents share no text with the ones pairs are mined from.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import random
import re
import sys
from pathlib import Path

PROMPT = "Transcribe the following text exactly, word for word:\n\n"
HELD_OUT = 0.4  # share of modules (hence roughly of documents) kept out of mining


def objects(module):
    """The module, its public functions and classes, and the classes' public methods."""
    yield module
    for name in sorted(dir(module)):
        if name.startswith("_"):
            continue
        obj = getattr(module, name, None)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield obj
            if inspect.isclass(obj):
                for member in sorted(vars(obj)):
                    if not member.startswith("_") and inspect.isfunction(vars(obj)[member]):
                        yield vars(obj)[member]


def paragraphs():
    seen: set[str] = set()
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 — platform-only modules
            continue
        for obj in objects(module):
            for para in re.split(r"\n\s*\n", inspect.getdoc(obj) or ""):
                text = " ".join(para.split())
                if 300 <= len(text) <= 1000 and text not in seen and ">>>" not in text:
                    seen.add(text)
                    yield name, text


def main() -> None:
    out = Path(__file__).parent
    sides: dict[str, list[dict]] = {"mining": [], "heldout": []}
    for module, text in paragraphs():
        held = int.from_bytes(hashlib.blake2b(module.encode(), digest_size=8).digest(), "big") / 2**64 < HELD_OUT
        sides["heldout" if held else "mining"].append({
            "messages": [{"role": "user", "content": PROMPT + text}], "reference": text,
            "meta": {"source": f"python {sys.version.split()[0]} stdlib docstring: {module}"}})
    for side, rows in sides.items():
        random.Random(0).shuffle(rows)
        for i, row in enumerate(rows):
            row["id"] = f"{side}-{i:04d}"
        with (out / f"{side}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"id": row["id"], **{k: v for k, v in row.items() if k != "id"}}) + "\n")
        print(f"{len(rows)} documents → {out / f'{side}.jsonl'}")


if __name__ == "__main__":
    main()
