"""A labelled synthetic set for the loop detector, built from real text (bench/data/passages.jsonl:
Python standard-library docstrings, PSF licence). Deterministic for a given seed.

Positives (label "degenerate"): loops injected into clean text at many unit lengths and offsets and
cut mid-unit, counter loops, near-repeats with a word swapped per copy, loops that stopped on their
own, CJK loops, loops confined to the last ~15 % of a long text, list items stuck under a climbing
number or weekday, sentences re-said with a word swapped, a short word run inside a list.
Hard negatives (label "clean"): long clean prose (stopped or cut off), markdown tables, forms with dot
leaders, numbered lists, CSV, repetition that the reference has too (counting, forms, tables), and
lists whose lines share a pattern but say different things (plans, times tables, checklists).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).parent / "data"
UNIT_LENGTHS = [1, 2, 3, 4, 6, 9, 13, 20, 35, 60, 100, 200, 400]
CJK = "我们在这里讨论文本退化的问题模型有时会陷入重复循环直到达到最大长度为止这种失败需要被检测出来并用于训练"


def passages() -> list[str]:
    return [json.loads(line)["text"] for line in (DATA / "passages.jsonl").open()]


def _prose(rng: random.Random, texts: list[str], length: int) -> str:
    out = ""
    while len(out) < length:
        out += rng.choice(texts) + ("\n\n" if rng.random() < 0.3 else " ")
    return out[:length]


def _loop(unit: str, span: int) -> str:
    return (unit * (span // len(unit) + 2))[:span]  # cut mid-unit


def _injected(rng, texts, i):
    L = UNIT_LENGTHS[i % len(UNIT_LENGTHS)]
    source = rng.choice(texts)
    start = rng.randrange(0, max(1, len(source) - L))
    unit = source[start : start + L]
    if not unit.strip():
        unit = "ab"[: max(1, L)] if L < 3 else (unit + "x")[:L]
    copies = rng.uniform(6, 25) if L < 60 else rng.uniform(4, 8)
    span = max(100, int(L * copies) + rng.randrange(0, L))
    prefix = _prose(rng, texts, rng.randrange(50, 1500))
    text = prefix + _loop(unit, span)
    ref = _prose(random.Random(i), texts, len(prefix) + 200) if rng.random() < 0.5 else None
    return text, "length", ref, f"injected_L{L}"


def _counter(rng, texts, i):
    template = rng.choice(["Step {n}: check the value.\n", "{n}. Denmark\n", "item {n}, ", "Row {n} | ok |\n",
                           "if it is -{n}, the call should guess the time; "])
    first = rng.randrange(1, 50)
    body = "".join(template.format(n=n) for n in range(first, first + rng.randrange(20, 60)))
    text = _prose(rng, texts, rng.randrange(50, 600)) + body[: rng.randrange(len(body) // 2, len(body))]
    return text, "length", None, "counter"


def _near_repeat(rng, texts, i):
    words = ["file", "socket", "path", "buffer", "stream", "handle"]
    template = rng.choice(["The {w} object is returned as a tuple of a {w} and a {v}. ",
                           "- {w}: This is a built-in function that returns the {v}.\n",
                           "If the {w} is set, the {v} will be used instead of the default. "])
    body = "".join(template.format(w=rng.choice(words), v=rng.choice(words)) for _ in range(rng.randrange(10, 25)))
    return _prose(rng, texts, rng.randrange(100, 600)) + body, "length", None, "near_repeat"


def _stopped(rng, texts, i):
    unit = rng.choice(texts)[: rng.randrange(30, 90)] + "\n"
    return _prose(rng, texts, rng.randrange(50, 400)) + unit * rng.randrange(6, 12), "stop", None, "stopped_loop"


def _cjk(rng, texts, i):
    start = rng.randrange(0, len(CJK) - 10)
    unit = CJK[start : start + rng.randrange(3, 10)]
    return CJK * 2 + _loop(unit, rng.randrange(60, 200)), "length", None, "cjk"


def _late(rng, texts, i):
    body = _prose(rng, texts, rng.randrange(3000, 5000))
    unit = rng.choice(texts)[: rng.randrange(40, 120)] + " "
    return body + _loop(unit, len(body) // 6), "length", None, "late_loop"


WEEK = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SEMANA = ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"]


def _stuck_item(rng, texts, i):
    """A list whose item is stuck while the number or the weekday moves, ended by the model (EOS)."""
    head = "".join(f"{n}. {t.split()[0]}\n" for n, t in enumerate(rng.sample(texts, rng.randrange(1, 6)), 1))
    item = rng.choice([t for t in texts if t[:1].isalpha()]).split(".")[0][: rng.randrange(6, 40)].strip()
    first = head.count("\n") + 1
    if i % 4 == 0:
        days = rng.choice([WEEK, SEMANA])
        body = "".join(f"{days[n % 7]}: {item}\n" for n in range(rng.randrange(5, 16)))
    else:
        body = "".join(f"{n}. {item}\n" for n in range(first, first + rng.randrange(5, 20)))
    return head + body, "stop", None, "stuck_item"


def _sentence_swap(rng, texts, i):
    """A sentence re-said with one word swapped each time, ended by the model."""
    words = rng.choice(texts).split()[:12]
    slot = rng.randrange(len(words))
    choices = rng.sample([w for w in " ".join(texts[:30]).split() if w.isalpha()], 3)
    body = " ".join(" ".join(words[:slot] + [rng.choice(choices)] + words[slot + 1 :]).rstrip(".") + "."
                    for _ in range(rng.randrange(5, 10)))
    return _prose(rng, texts, rng.randrange(50, 300)) + " " + body, "stop", None, "sentence_swap"


def _word_run(rng, texts, i):
    """A short token said over and over inside a list that then goes on."""
    items = [t.split()[0].strip(".,:;()").lower() for t in rng.sample(texts, 6)]
    token = rng.choice(["th", "the", "a", "and", "-", "er"])
    run = ", ".join([token] * rng.randrange(12, 30))
    return "Here are some words: " + ", ".join(items[:3]) + ", " + run + ", " + ", ".join(items[3:]) + ".", \
        "stop", None, "word_run"


POSITIVES = [_injected] * 6 + [_counter, _near_repeat, _stopped, _cjk, _late, _stuck_item, _sentence_swap, _word_run]


def _clean_prose(rng, texts, i):
    text = _prose(rng, texts, rng.choice([120, 400, 1000, 2000, 4000, 8000]))
    return text, rng.choice(["stop", "length"]), None, "prose"


def _table(rng, texts, i):
    names = sorted({t.split()[0].strip(".,:;()") for t in texts if t.split()})
    rows = rng.sample(names, min(len(names), rng.randrange(8, 30)))
    text = "| name | length | words |\n| --- | --- | --- |\n" + "".join(
        f"| {r} | {len(r)} | {rng.randrange(10, 999)} |\n" for r in rows)
    return text, "stop", text if rng.random() < 0.5 else None, "table"


def _form(rng, texts, i):
    fields = ["Name", "Address", "City", "Postcode", "Phone", "Date of birth", "Account", "Signature", "Date"]
    text = "".join(f"{f} {'.' * rng.randrange(8, 40)} {rng.choice(texts).split()[0]}\n" for f in fields)
    return text, "stop", None, "form"


def _numbered(rng, texts, i):
    items = rng.sample(texts, 12)
    text = "".join(f"{n}. {t[:rng.randrange(30, 80)]}\n" for n, t in enumerate(items, 1))
    return text, rng.choice(["stop", "length"]), None, "numbered_list"


def _csv(rng, texts, i):
    rows = (f"{n},{rng.choice(texts).split()[0]},{rng.randrange(100)}\n" for n in range(1, 25))
    text = "id,name,score\n" + "".join(rows)
    return text, "stop", None, "csv"


def _legit(rng, texts, i):
    kind = i % 3
    if kind == 0:
        text = "\n".join(str(n) for n in range(1, rng.randrange(20, 80)))
    elif kind == 1:
        text = "".join(f"Question {n}: Yes [ ] No [ ] N/A [ ]\n" for n in range(1, 30))
    else:
        text = "| x | y |\n|---|---|\n" + "".join(f"| {n} | {n * n} |\n" for n in range(1, 40))
    return text, "length", text, "legit_with_reference"


def _lists_that_repeat_a_pattern(rng, texts, i):
    """Lists whose lines share a pattern but say different things: plans where two numbers move,
    multiplication tables, a weekday schedule, a checklist, counting that was asked for."""
    kind = i % 5
    if kind == 0:
        start = rng.randrange(1, 5)
        text = "".join(f"Week {n}: run {n + start} km and walk {2 * n} km\n" for n in range(1, rng.randrange(6, 14)))
    elif kind == 1:
        k = rng.randrange(2, 13)
        text = "".join(f"{k} x {n} = {k * n}\n" for n in range(1, 13))
    elif kind == 2:
        chores = rng.sample([t.split()[0] for t in texts], 7)
        text = "".join(f"{d}: {c}\n" for d, c in zip(WEEK, chores, strict=True))
    elif kind == 3:
        things = rng.sample(sorted({w.strip(".,:;()") for t in texts for w in t.split()[:3] if w.isalpha()}), 8)
        text = "".join(f"{n}. Check the {w} before you start.\n" for n, w in enumerate(things, 1))
    else:
        text = ", ".join(str(n) for n in range(1, rng.randrange(10, 40))) + "."
    return text, "stop", None, "patterned_list"


NEGATIVES = [_clean_prose] * 3 + [_table, _form, _numbered, _csv, _legit, _lists_that_repeat_a_pattern]


def build(n: int = 600, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    texts = passages()
    rows = []
    for i in range(n):
        maker = (POSITIVES if i % 2 == 0 else NEGATIVES)[(i // 2) % len(POSITIVES if i % 2 == 0 else NEGATIVES)]
        text, finish, reference, category = maker(rng, texts, i)
        rows.append({"id": f"syn-{i}", "label": "degenerate" if maker in POSITIVES else "clean",
                     "category": category, "text": text, "finish_reason": finish, "reference": reference})
    return rows
