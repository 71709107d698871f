"""Build the transcription documents: real technical prose from this Python's standard-library
docstrings (PSF licence, permissive), kept page-shaped — 1 to 4 consecutive paragraphs of one docstring
with their line breaks, indented blocks and bullet lists — and the text as the reference.

    python examples/degeneration/make_docs.py

Writes mining.jsonl and heldout.jsonl beside this file. The split is by module — every document of a
module lands on the same side — so held-out documents share no text with the ones pairs are mined from.

Why pages and not single paragraphs: a model trained only on one-paragraph chosen sides learns to stop
after one paragraph (the shape of the chosen side is what it learns to stop at; see issue 12 and
DESIGN.md), which on a real page is silent data loss.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

PROMPT = "Transcribe the following text exactly, word for word:\n\n"
HELD_OUT = 0.4  # share of modules (hence roughly of documents) kept out of mining
MIN_CHARS, MAX_CHARS = 250, 1000  # a page that fits max_tokens 384 when copied (~3.5 chars/token)
MAX_PARAGRAPHS = 4


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


def pages(doc: str) -> list[str]:
    """Consecutive paragraphs of one docstring grouped greedily into pages of at most MAX_PARAGRAPHS
    paragraphs and MAX_CHARS characters; line breaks and indentation inside a paragraph are kept."""
    paras = [p.strip("\n").rstrip() for p in re.split(r"\n[ \t]*\n", doc) if p.strip()]
    out, current = [], []
    for para in paras:
        if len(para) > MAX_CHARS:  # a paragraph too long for a page ends the current one and is skipped
            out.append(current)
            current = []
            continue
        if current and (len(current) == MAX_PARAGRAPHS or len("\n\n".join(current + [para])) > MAX_CHARS):
            out.append(current)
            current = []
        current.append(para)
    out.append(current)
    return ["\n\n".join(group) for group in out if group]


def documents():
    seen: set[str] = set()
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "turtle"}:
            continue
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 — platform-only modules
            continue
        for obj in objects(module):
            for text in pages(inspect.getdoc(obj) or ""):
                if MIN_CHARS <= len(text) <= MAX_CHARS and text not in seen and ">>>" not in text:
                    seen.add(text)
                    yield name, text


def main() -> None:
    out = Path(__file__).parent
    sides: dict[str, list[dict]] = {"mining": [], "heldout": []}
    for module, text in documents():
        held = int.from_bytes(hashlib.blake2b(module.encode(), digest_size=8).digest(), "big") / 2**64 < HELD_OUT
        sides["heldout" if held else "mining"].append({
            "messages": [{"role": "user", "content": PROMPT + text}], "reference": text,
            "meta": {"source": f"python {sys.version.split()[0]} stdlib docstring: {module}",
                     "paragraphs": text.count("\n\n") + 1}})
    for side, rows in sides.items():
        random.Random(0).shuffle(rows)
        for i, row in enumerate(rows):
            row["id"] = f"{side}-{i:04d}"
        with (out / f"{side}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"id": row["id"], **{k: v for k, v in row.items() if k != "id"}}) + "\n")
        shape = Counter(row["meta"]["paragraphs"] for row in rows)
        lists = sum(bool(re.search(r"(?m)^[ \t]*([-*+]|\d+[.)])[ \t]", row["reference"])) for row in rows)
        indented = sum(bool(re.search(r"(?m)^[ \t]+\S", row["reference"])) for row in rows)
        print(f"{len(rows)} documents → {out / f'{side}.jsonl'} (paragraphs: "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(shape.items()))}; {lists} with a list, {indented} with "
              "indented lines)")


if __name__ == "__main__":
    main()
