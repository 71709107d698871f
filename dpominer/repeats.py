"""Repetition below the tail loop: list items, sentences, short words, token confidence. Pure functions.

The tail-loop checks of :mod:`dpominer.degeneration` look for a text that *ends* periodic. Four kinds of
loop escape them, all common in small instruction models:

* a list whose item is stuck while its marker climbs ("14. Blackberry", "15. Blackberry", or the same
  chore under Monday, Tuesday, …) — often ending on its own, after a few copies, with EOS;
* sentences re-said with one word swapped ("It is not a pure language. It is not a high-level
  language. It is not a pure language.");
* a short token said over and over inside a list that then goes on ("th, th, th, th, …");
* a list written on one line whose items keep coming round ("Earth, Mars, Venus, Earth, Mars, …").

Each function below returns plain numbers (and where the repetition starts, for the *why*); the verdict
is made in :func:`dpominer.degeneration.detect`.
"""

from __future__ import annotations

import operator
import re
import string
from dataclasses import dataclass
from itertools import groupby

from rapidfuzz.distance import Indel

# A list marker: bullet, number or letter with its punctuation, heading hashes — what changes per item.
_MARKER = re.compile(r"\s*(?:[-*•+·]\s*|#+\s*|\(?\d{1,4}(?:[.)\]:]|\s*[-–—]\s)\s*|\(?[a-zA-Z][.)]\s+)?")
_TRAILING = ".,;:!?。 \t"
_NUMBER = re.compile(r"\d+")
_PUNCTUATION = string.punctuation + "«»“”‘’—–•·…¿¡"

# Weekday and month names (en, pt, es, de, fr, it): a cycle that counts like a number in a list.
_CYCLE_WORDS = """
monday tuesday wednesday thursday friday saturday sunday january february march april may june july
august september october november december
segunda-feira terça-feira quarta-feira quinta-feira sexta-feira segunda terça quarta quinta sexta sábado
domingo janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro
lunes martes miércoles jueves viernes sabado enero febrero marzo mayo junio julio septiembre octubre
noviembre diciembre
montag dienstag mittwoch donnerstag freitag samstag sonntag januar februar märz juni juli oktober dezember
lundi mardi mercredi jeudi vendredi samedi dimanche janvier février mars avril juin juillet août
septembre octobre décembre
lunedì martedì mercoledì giovedì venerdì sabato domenica gennaio febbraio aprile maggio giugno luglio
settembre ottobre dicembre
""".split()
_CYCLE = re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, set(_CYCLE_WORDS)), key=len, reverse=True))
                    + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class ItemRun:
    """Consecutive list lines whose item text is the same while only the marker (number, weekday) moves."""

    copies: int  # lines in the run
    start: int  # char offset of the run's first line
    end: int  # char offset just past its last line
    item: str  # the stuck item, as the first line of the run has it
    counter: bool  # True when a number or weekday/month changes between the copies


@dataclass(frozen=True)
class ListStats:
    items: int  # non-empty lines
    run: ItemRun | None  # the longest run of one stuck item (≥ 2 copies)
    dup_share: float  # share of items (with letters) that repeat an earlier item exactly
    worded: int = 0  # items with letters
    first_dup: int = -1  # char offset of the earlier copy of the first repeated item
    dup_item: str = ""  # that item
    moving_numbers: int = 0  # lines of one shape in a row: how many of their numbers change (median)
    dup_folded: float = 0.0  # share of lines (with letters) that repeat an earlier line up to its numbers


def _item_key(line: str) -> tuple[str, str]:
    """(item text with marker, weekday/month names and digits neutralised, the text that was removed)."""
    marker = _MARKER.match(line)
    item = line[marker.end() if marker else 0 :].strip(_TRAILING).lower()
    moved = marker.group().strip() if marker else ""
    if _CYCLE.search(item):
        moved += "|" + "|".join(_CYCLE.findall(item))
        item = _CYCLE.sub("§", item)
    return item, moved


def list_stats(text: str, min_items: int = 4, window: int = 16384) -> ListStats | None:
    """Item-level view of the last ``window`` chars of a text written as lines; None when they hold fewer
    than ``min_items`` lines."""
    pos = max(0, len(text) - window)
    if text.count("\n", pos) < min_items - 1:
        return None
    keys: list[tuple[str, str, int, int]] = []  # (item, moved, start, end)
    for line in text[pos:].split("\n"):
        if line.strip():
            item, moved = _item_key(line)
            keys.append((item, moved, pos, pos + len(line)))
        pos += len(line) + 1
    if len(keys) < min_items:
        return None
    best: ItemRun | None = None
    seen: dict[str, int] = {}  # item → offset of its first line
    dups = worded = 0
    first_dup, dup_item = -1, ""
    for item, group in groupby(keys, key=lambda k: k[0]):
        rows = list(group)
        if not any(c.isalpha() for c in item):
            continue  # "1.", "2.", … or a row of numbers: counting, not a stuck item
        worded += len(rows)
        dups += len(rows) - (item not in seen)
        if item in seen or len(rows) > 1:
            if first_dup < 0:
                first_dup, dup_item = seen.get(item, rows[0][2]), item
        seen.setdefault(item, rows[0][2])
        if len(rows) >= 2 and (best is None or len(rows) > best.copies):
            counter = len({moved for _, moved, _, _ in rows}) > 1
            best = ItemRun(len(rows), rows[0][2], rows[-1][3], item, counter)
    return ListStats(len(keys), best, dups / worded if worded else 0.0, worded, first_dup, dup_item,
                     _moving_numbers([item for item, _, _, _ in keys]), _dup_folded(keys))


def _dup_folded(keys: list[tuple[str, str, int, int]]) -> float:
    """Share of the lines with letters that say an earlier line again once numbers are folded, weekday
    and month names kept: a list that comes round again ("Jan: 31", …, "Dec: 31", "Jan: 28", …) or a
    form whose fields recur. A plan's lines ("Week 2: run 3 km") fold alike too, so this is a weak
    signal for the model, not a rule."""
    seen: set[str] = set()
    lines = dups = 0
    for item, moved, _, _ in keys:
        if "§" in item:  # the names back in place (a "§" the model wrote itself has no name: zip stops)
            parts, names = item.split("§"), moved.split("|")[1:]
            item = parts[0] + "".join(name + part for name, part in zip(names, parts[1:], strict=False))
        line = _NUMBER.sub("0", item)
        if sum(map(str.isalpha, line)) < 2:
            continue
        lines += 1
        dups += line in seen
        seen.add(line)
    return dups / lines if lines else 0.0


def _moving_numbers(items: list[str]) -> int:
    """For consecutive items of one shape (equal with numbers folded), how many numbers change from one
    to the next — the median over such pairs: 0 for a stuck item, 1 for a counter, 2+ for a table or a
    plan ("Week 2: run 3 km", "7 x 2 = 14")."""
    changes = []
    previous: list[str] | None = None
    previous_shape = None
    for item in items:
        numbers = _NUMBER.findall(item)
        shape = _NUMBER.sub("0", item) if numbers else item
        if previous is not None and shape == previous_shape and numbers:
            changes.append(sum(a != b for a, b in zip(numbers, previous, strict=True)))
        previous, previous_shape = numbers, shape
    return sorted(changes)[len(changes) // 2] if changes else 0


_INLINE_SEPARATOR = re.compile(r"[,;、，]")


@dataclass(frozen=True)
class InlineList:
    """The longest run of short items written one after another on a line ("Earth, Mars, Venus, …")."""

    items: int  # items in the run
    dup_share: float  # share of them that re-say an earlier item of the run (numbers folded)
    start: int  # char offset of the first re-said item (-1 when none)
    item: str  # that item


def inline_list(text: str, min_items: int = 8, max_words: int = 4, window: int = 16384) -> InlineList | None:
    """Items of 1–``max_words`` words with letters, separated by commas or semicolons on one line: an
    enumeration written inline, where a list that keeps coming round ("Earth, Mars, Mercury, Venus,
    Earth, Mars, …") hides from the line-based checks. None when no run has ``min_items`` items. Only
    lines with enough separators are split, so prose costs a count per line."""
    offset = max(0, len(text) - window)
    tail = text[offset:]
    if sum(map(tail.count, ",;、，")) < min_items - 1:
        return None
    best: InlineList | None = None
    pos = offset
    for line in tail.split("\n"):
        for run in _inline_runs(_inline_parts(line, min_items, max_words), pos, max_words, 12 * max_words):
            if len(run) >= min_items and (best is None or len(run) > best.items):
                best = _inline_stats(run)
        pos += len(line) + 1
    return best


def _inline_parts(line: str, min_items: int, max_words: int) -> list[str]:
    """The line split at its separators when it can hold ``min_items`` short items in a row, else []."""
    separators = sum(map(line.count, ",;、，"))
    # an inline list has a separator every few words; prose has one every fifteen or so
    if separators < min_items - 1 or separators * 2 * max_words < line.count(" "):
        return []
    plain = ";" not in line and "、" not in line and "，" not in line
    parts = line.split(",") if plain else _INLINE_SEPARATOR.split(line)
    run = 0
    for length in map(len, parts):  # prose clauses are longer than items
        run = run + 1 if length <= 12 * max_words else 0
        if run >= min_items:
            return parts
    return []


def _inline_runs(parts: list[str], pos: int, max_words: int, max_chars: int):
    """Runs of consecutive short items among one line's parts, each item (folded text, char offset)."""
    run: list[tuple[str, int]] = []
    for part in parts:
        item = "" if len(part) > max_chars else _NUMBER.sub("0", part.strip(_PUNCTUATION + " \t").lower())
        if 0 < len(item.split()) <= max_words and any(map(str.isalpha, item)):
            run.append((item, pos + len(part) - len(part.lstrip())))
        elif run:
            yield run
            run = []
        pos += len(part) + 1  # every separator is one char
    if run:
        yield run


def _inline_stats(run: list[tuple[str, int]]) -> InlineList:
    seen: set[str] = set()
    dups, start, first = 0, -1, ""
    for item, at in run:
        if item in seen:
            dups += 1
            if start < 0:
                start, first = at, item
        seen.add(item)
    return InlineList(len(run), dups / len(run), start, first)


# ------------------------------------------------------------------------------------------- sentences

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


@dataclass(frozen=True)
class SentenceStats:
    sentences: int  # sentences of ≥ min_words words in the window
    repeats: int  # of them, the same as an earlier one, or with one word swapped
    exact: int  # of the repeats, the same up to a counter (one number changed, or nothing)
    start: int  # char offset of the first repeat's first copy (-1 when none)
    near: int = 0  # sentences close to an earlier one in words (edits ≤ a quarter), repeats included


def _words(sentence: str) -> list[str]:
    """Lower-cased words, punctuation-only tokens (table bars, bullets, "=") dropped. Numbers stay as
    they are: a counter that climbs is one swapped word, two numbers that change are two."""
    stripped = (w.strip(_PUNCTUATION) for w in sentence.lower().split())
    return [w for w in stripped if w]


def _swap(words: list[str], earlier: list[str]) -> int | None:
    """0 when the same up to one changed number, 1 when one other word changed, None otherwise."""
    changed = [(a, b) for a, b in zip(words, earlier, strict=True) if a != b]
    if not changed:
        return 0
    if len(changed) > 1:
        return None
    a, b = changed[0]
    return 0 if a.isdigit() and b.isdigit() else 1


def sentence_stats(text: str, window: int = 3000, min_words: int = 4) -> SentenceStats:
    """How many sentences of the last ``window`` chars repeat an earlier one: the same (up to a counter)
    or with one word swapped. Sentences are keyed by each half of their words, so a one-word swap (which
    leaves one half intact) is found with two dict look-ups, then confirmed word by word."""
    offset = max(0, len(text) - window)
    by_half: dict[tuple, list[tuple[list[str], int]]] = {}
    by_shingle: dict[tuple[str, ...], list[int]] = {}
    sentences: list[list[str]] = []
    total = repeats = exact = near = 0
    first = -1
    pos = 0
    tail = text[offset:]
    for match in _SENTENCE_END.finditer(tail + "\n"):
        sentence, start = tail[pos : match.start()], pos
        pos = match.end()
        words = _words(sentence)
        if len(words) < min_words:
            continue
        total += 1
        half = len(words) // 2
        keys = ((len(words), 0, tuple(words[:half])), (len(words), 1, tuple(words[half:])))
        best: tuple[int, int] | None = None  # (swap kind, start of the earlier copy)
        for key in keys:
            for earlier, earlier_start in by_half.get(key, ()):
                kind = _swap(words, earlier)
                if kind is not None and (best is None or kind < best[0]):
                    best = (kind, earlier_start)
        if best is not None:
            repeats += 1
            exact += best[0] == 0
            first = best[1] if first < 0 else min(first, best[1])
        shingles = _shingles(words)
        if best is not None or _near_earlier(words, shingles, sentences, by_shingle):
            near += 1
        for key in keys:
            by_half.setdefault(key, []).append((words, offset + start))
        for shingle in shingles:
            by_shingle.setdefault(shingle, []).append(len(sentences))
        sentences.append(words)
    return SentenceStats(total, repeats, exact, first, near)


def _shingles(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _near_earlier(words: list[str], shingles: set[tuple[str, ...]], sentences: list[list[str]], by_shingle: dict,
                  max_compared: int = 8) -> bool:
    """True when an earlier sentence is the same up to edits of a quarter of the words, insertions and
    deletions included ("If the bill passes, it is sent …" / "If the bill is passed, it is sent …").
    Only sentences sharing a word 3-gram are compared, the most recent first: prose rarely shares one."""
    seen = sorted({i for shingle in shingles for i in by_shingle.get(shingle, ())}, reverse=True)
    for i in seen[:max_compared]:
        earlier = sentences[i]
        if abs(len(earlier) - len(words)) * 4 > max(len(words), len(earlier)):
            continue
        if Indel.normalized_similarity(words, earlier) >= 0.75:
            return True
    return False


# ------------------------------------------------------------------------------------- words and tokens

def word_run(words: list[str]) -> tuple[int, str]:
    """Longest run of one word said again and again ("th, th, th"), and the word. ``words`` are the
    detector's tail words (lower-cased, punctuation kept, digits as 0); a word with a folded number is
    skipped ("8-bit, 16-bit, 32-bit" reads as one word repeated)."""
    if not any(map(operator.eq, words, words[1:])):  # prose, at C speed: no word twice in a row
        return 0, ""
    same = [i for i, (a, b) in enumerate(zip(words, words[1:], strict=False)) if a == b and "0" not in a]
    best, end, run = 0, -1, 0
    for k, i in enumerate(same):
        run = run + 1 if k and same[k - 1] == i - 1 else 1
        if run > best:
            best, end = run, i
    return (best + 1, words[end]) if best else (0, "")


def logprob_profile(logprobs: list[float], tail_share: float = 0.25) -> tuple[float, float] | None:
    """(mean log-prob of the last ``tail_share`` of the tokens, of the first): inside a loop the model's
    confidence climbs toward 0. None when there are too few tokens to tell."""
    n = len(logprobs)
    if n < 16:
        return None
    k = max(4, int(n * tail_share))
    return sum(logprobs[-k:]) / k, sum(logprobs[:k]) / k
