"""Build the structured-extraction documents: real Debian package records (`apt-cache dumpavail`, run
`apt-get update` first) → extract named fields into one JSON object under `schema.json`.

    python examples/structured/make_docs.py

Each document's prompt is one package record as `apt-cache show` prints it (eight of its fields); its
reference is the gold JSON object, built from the record's fields. Only records whose fields give an
unambiguous answer are used (a Maintainer with an e-mail address, 1–5 Depends without alternatives),
short enough to write under the run's max_tokens. Writes mining.jsonl and heldout.jsonl beside this
file; the split is by source package, so no held-out document shares a source package with a mined one.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
from pathlib import Path

PROMPT = ("Extract these fields from the Debian package record below and answer with one JSON object only: "
          "package, version, architecture, maintainer_email, installed_size_kb (an integer), "
          "depends (a list of package names, without versions).\n\n")
SHOWN = ("Package", "Version", "Installed-Size", "Maintainer", "Architecture", "Depends", "Description", "Section")
HELD_OUT = 0.35  # share of source packages kept out of mining
MINING_DOCS, HELDOUT_DOCS = 160, 80
MAX_ANSWER_CHARS = 300  # ≤ ~145 SmolLM2 tokens: room to finish under the run's max_tokens
MAINTAINER = re.compile(r"^(?P<name>[^<>]+?)\s*<(?P<email>[^<>@\s]+@[^<>\s]+)>$")


def records(dump: str):
    for stanza in dump.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            yield fields


def gold(fields: dict[str, str]) -> dict | None:
    maintainer = MAINTAINER.match(fields.get("Maintainer", ""))
    depends = [d.strip() for d in fields.get("Depends", "").split(",") if d.strip()]
    complete = {"Version", "Architecture"} <= set(fields)
    if (maintainer is None or not 1 <= len(depends) <= 5 or any("|" in d for d in depends)
            or not fields.get("Installed-Size", "").isdigit() or not complete):
        return None
    names = [re.split(r"[\s(:]", d, maxsplit=1)[0] for d in depends]
    if len(set(names)) != len(names):
        return None
    return {"package": fields["Package"], "version": fields["Version"], "architecture": fields["Architecture"],
            "maintainer_email": maintainer["email"], "installed_size_kb": int(fields["Installed-Size"]),
            "depends": names}


def main() -> None:
    dump = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    sides: dict[str, list[dict]] = {"mining": [], "heldout": []}
    seen: set[str] = set()
    for fields in records(dump):
        answer = gold(fields)
        if answer is None or fields["Package"] in seen or len(json.dumps(answer, indent=2)) > MAX_ANSWER_CHARS:
            continue
        seen.add(fields["Package"])
        source = fields.get("Source", fields["Package"]).split()[0]
        held = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "big") / 2**64 < HELD_OUT
        record = "\n".join(f"{k}: {fields[k]}" for k in SHOWN if k in fields)
        sides["heldout" if held else "mining"].append({
            "messages": [{"role": "user", "content": PROMPT + record}],
            "reference": json.dumps(answer, indent=2, ensure_ascii=False),
            "meta": {"source": f"Debian package record (apt-cache dumpavail): {fields['Package']}",
                     "source_package": source}})
    out = Path(__file__).parent
    for side, want in (("mining", MINING_DOCS), ("heldout", HELDOUT_DOCS)):
        rows = sorted(sides[side], key=lambda r: r["meta"]["source"])
        random.Random(0).shuffle(rows)
        rows = rows[:want]
        with (out / f"{side}.jsonl").open("w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps({"id": f"{side}-{i:04d}", **row}, ensure_ascii=False) + "\n")
        print(f"{len(rows)} of {len(sides[side])} documents → {out / f'{side}.jsonl'}")


if __name__ == "__main__":
    main()
