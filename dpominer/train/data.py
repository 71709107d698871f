"""Preference pairs → token ids: chat templates, the prompt/completion boundary, loop-aware truncation,
length-grouped batches and collation. Pure functions of (records, tokenizer, settings).

The boundary is the part other trainers get silently wrong: with a chat template, the prompt rendered
alone (with the generation prompt) must be a prefix of the prompt rendered with the reply, and its tokens
a prefix of the whole sequence's tokens. When either fails, masking the "prompt" tokens masks the wrong
ones; here that is an error naming the pair and what differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import torch

from ..records import Message, Pair


@dataclass
class Example:
    """One tokenised pair. Completion ids exclude the prompt; ``rejected_keep`` is how many rejected
    tokens must stay in the window for the loop's onset and several copies to be seen (None: no loop)."""

    key: str
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    rejected_keep: int | None = None
    # image pairs: the extra inputs of the prompt's images (pixel_values, …), loaded when a batch is built
    # (pages at 150 dpi are megabytes each: not kept in memory), and a hash of those pixels
    vision: Callable[[], dict[str, torch.Tensor]] | None = None
    image_digest: str | None = None
    sources: dict[str, str] = field(default_factory=dict)  # per side: "sampled", or why it was tokenised
    rejected_cut_tokens: int = 0  # tokens after onset + K copies dropped by ``rejected_loop_copies``

    def length(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class Truncation:
    """What fitting pairs into ``max_length`` did (counts, for the summary)."""

    prompts_cut: int = 0
    chosen_cut: int = 0
    rejected_cut: int = 0
    loops_kept_by_moving_the_cut: int = 0
    rejected_loops_cut: int = 0  # rejected loops cut to onset + --rejected-loop-copies copies
    dropped: dict[str, int] = field(default_factory=dict)


class PairCheck:
    """What no pair may be, checked on every line before training (``pairs.jsonl:LINE: why``): a side that
    is empty or blank, a side from a failed generation (``finish_reason`` "error", what a dead server
    leaves), chosen equal to rejected once Unicode and whitespace are normalised as for fidelity, or an
    exact copy of an earlier pair. ``reason`` names the last refusal (the summary counts skips by it)."""

    def __init__(self) -> None:
        self.lineno = 0
        self.reason: str | None = None
        self.seen: dict[bytes, int] = {}  # 16-byte digest of (prompt, chosen, rejected) → line

    def line(self, raw: bytes) -> None:
        self.lineno += 1
        self.reason = None

    def _refuse(self, reason: str, message: str) -> None:
        self.reason = reason
        raise ValueError(message)

    def __call__(self, record: Pair) -> None:
        from ..fidelity import FidelityConfig, normalise

        texts = {}
        for side in ("chosen", "rejected"):
            text = _side_text(getattr(record, side))
            if not text.strip():
                self._refuse(f"{side}_blank", f"the {side} side is {'blank' if text else 'empty'}")
            scores = record.scores(side)
            if scores.finish_reason == "error" or getattr(scores, "error", None):
                self._refuse(f"{side}_failed", f"the {side} side comes from a failed generation (finish_reason "
                                               "'error'), not from the model")
            texts[side] = normalise(text, FidelityConfig())
        if texts["chosen"] == texts["rejected"]:
            self._refuse("chosen_equals_rejected", "chosen and rejected are the same text (after normalising Unicode "
                                                   "and whitespace): nothing to prefer")
        key = hashlib.blake2b(orjson.dumps([_plain(record.prompt), _plain(record.chosen), _plain(record.rejected)]),
                              digest_size=16).digest()
        if key in self.seen:
            self._refuse("duplicate", f"an exact copy of the pair on line {self.seen[key]}")
        self.seen[key] = self.lineno


def _plain(value: str | list[Message]) -> Any:
    return value if isinstance(value, str) else [m.model_dump() for m in value]


def _side_text(value: str | list[Message]) -> str:
    """A completion's text: the string, or the contents of its messages."""
    return value if isinstance(value, str) else "".join(m.text for m in value)


def _messages(value: str | list[Message]) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [m.model_dump(exclude_none=True) for m in value]
    return [{"role": "user", "content": value}]


def _first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _prompt_text(tokenizer, record: Pair) -> tuple[str, bool]:
    """(the prompt as training renders it, whether tokenising it adds special tokens)."""
    if record.conversational:
        text = tokenizer.apply_chat_template(_messages(record.prompt), tokenize=False, add_generation_prompt=True)
        return text, False  # a rendered template already holds its BOS
    if record.rendered_prompt is not None:
        return record.rendered_prompt, False  # sampled through a chat template: train on what the model saw
    return record.prompt, True  # type: ignore[return-value]


def _completion_text(tokenizer, record: Pair, side: str, prompt_text: str) -> tuple[str, int]:
    """(completion text, where the side's own text starts inside it)."""
    value = getattr(record, side)
    ended = record.scores(side).ended
    if not record.conversational:
        return value, 0
    reply = _messages(value)
    full_text = tokenizer.apply_chat_template(_messages(record.prompt) + reply, tokenize=False)
    if not full_text.startswith(prompt_text):
        at = _first_difference(prompt_text, full_text)
        raise ValueError(
            f"the chat template renders the prompt differently once a reply follows (from character {at}: "
            f"{prompt_text[at:at + 40]!r} alone vs {full_text[at:at + 40]!r} with the {side} reply), so the prompt "
            "tokens cannot be masked reliably; fix the template or give the pairs as strings")
    completion = full_text[len(prompt_text):]
    content = reply[-1]["content"]
    if isinstance(content, list):  # content parts (image pairs): the reply's text
        content = "".join(part.get("text") or "" for part in content if part.get("type") == "text")
    start = completion.find(content) if content else 0
    if not ended and start == 0:
        completion = content  # cut off at max_tokens or a loop stop: the model never closed its turn
    return completion, max(start, 0)


def _tokens_with_offsets(tokenizer, text: str, special: bool) -> tuple[list[int], list[tuple[int, int]] | None]:
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
    return tokenizer(text, add_special_tokens=special)["input_ids"], None


def _char_to_token(offsets: list[tuple[int, int]] | None, n_tokens: int, char: int, text_len: int) -> int:
    """Number of completion tokens needed to cover characters [0, char)."""
    if offsets is None:  # slow tokenizer: proportional estimate
        return min(n_tokens, int(n_tokens * char / max(text_len, 1)) + 1)
    for i, (_, end) in enumerate(offsets):
        if end >= char:
            return i + 1
    return n_tokens


def _char_to_sampled_token(tokenizer, ids: list[int], char: int) -> int:
    """Number of sampled tokens whose decoded text covers characters [0, char) (bisection on decodes)."""
    low, high = 0, len(ids)
    while low < high:
        mid = (low + high) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True)) >= char:
            high = mid
        else:
            low = mid + 1
    return max(low, 1)


def _sampled_side(tokenizer, record: Pair, side: str, prompt_text: str) -> list[int] | str:
    """The side's token ids exactly as sampled, or why they cannot be used (then the side is tokenised)."""
    ids = getattr(record, f"{side}_token_ids")
    if not ids:
        return "not_in_pair"
    if record.conversational and record.rendered_prompt != prompt_text:
        return "rendered_prompt_differs"  # no rendered prompt, or another template: not the sampled context
    text = getattr(record, side) if isinstance(getattr(record, side), str) else getattr(record, side)[-1].text
    if tokenizer.decode(ids, skip_special_tokens=True) != text:
        return "token_ids_do_not_decode_to_text"  # another tokenizer, or a text edited after sampling
    ids = list(ids)
    if record.scores(side).ended:
        while ids and ids[-1] in tokenizer.all_special_ids:
            ids.pop()  # a stop token a backend left in: the end of the turn is appended once, below
    return ids


def _end_of_turn(tokenizer, record: Pair, side: str, prompt_text: str) -> list[int]:
    """What training appends after a side that ended on its own: EOS, or the template's end of the turn."""
    if not record.scores(side).ended:
        return []
    if not record.conversational:
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    completion, start = _completion_text(tokenizer, record, side, prompt_text)
    closing = completion[start + len(getattr(record, side)[-1].text):]
    return tokenizer(closing, add_special_tokens=False)["input_ids"] if closing else []


def _tokenized_side(tokenizer, record: Pair, side: str, prompt_text: str, special: bool, prompt_ids: list[int],
                    separate: bool) -> tuple[list[int], list[tuple[int, int]] | None, str, int]:
    """(completion ids, their character offsets, completion text, where the side's text starts in it)."""
    completion, content_start = _completion_text(tokenizer, record, side, prompt_text)
    full_ids, offsets = _tokens_with_offsets(tokenizer, prompt_text + completion, special)
    if full_ids[:len(prompt_ids)] == prompt_ids:
        ids = full_ids[len(prompt_ids):]
        offsets = [(a - len(prompt_text), b - len(prompt_text)) for a, b in offsets[len(prompt_ids):]] \
            if offsets is not None else None
    elif separate:
        ids, offsets = _tokens_with_offsets(tokenizer, completion, False)
    else:
        at = _first_difference(prompt_ids, full_ids)
        raise ValueError(
            f"the prompt's tokens are not a prefix of prompt+{side} (token {at}: "
            f"{tokenizer.decode(prompt_ids[at:at + 3])!r} alone vs {tokenizer.decode(full_ids[at:at + 3])!r}); "
            "tokens merge across the boundary — end prompts on a token boundary (a space or newline), or "
            "pass --tokenize-separately to train on prompt and completion tokenised apart, as they were sampled")
    if not record.conversational and record.scores(side).ended and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return ids, offsets, completion, content_start


def tokenize_pair(record: Pair, tokenizer, *, loop_copies: int, separate: bool = False,
                  rejected_loop_copies: int | None = None) -> Example:
    """Token ids of both sides: as sampled where the pair carries them (and this tokenizer decodes them to
    the side's text), else tokenised. Raise ValueError (with the reason) when the prompt boundary does not
    hold for a tokenised side.

    With ``rejected_loop_copies`` K, a rejected side with a loop of more than K copies (``start_char``,
    ``unit_len``, ``copies`` in its scores) is cut after the onset and K copies of the unit, with no
    end-of-turn: what stays says "this loop is bad", not "long is bad" (the text before the onset is shared
    with the chosen side often enough to cancel in the margin)."""
    prompt_text, special = _prompt_text(tokenizer, record)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=special)["input_ids"]
    sides: dict[str, list[int]] = {}
    sources: dict[str, str] = {}
    rejected_keep = None
    cut_tokens = 0
    scores = record.rejected_scores
    loop_end = scores.loop_end(loop_copies)
    # only a loop of more than K copies is cut: one of K or fewer is kept whole, its end of turn included
    # (a loop that runs to the last character would otherwise lose just that)
    cuts = rejected_loop_copies is not None and (scores.copies is None or scores.copies > rejected_loop_copies)
    cut_end = scores.loop_end(rejected_loop_copies) if cuts else None
    for side in ("chosen", "rejected"):
        sampled = _sampled_side(tokenizer, record, side, prompt_text)
        to_token: Callable[[int, int], int]  # (character of the side's text, tokens now) → tokens that cover it
        if isinstance(sampled, list):
            ids = sampled + _end_of_turn(tokenizer, record, side, prompt_text)
            sources[side] = "sampled"
            text_len = len(_side_text(getattr(record, side)))

            def to_token(char: int, n: int, sampled=sampled, text_len=text_len) -> int:
                return _char_to_sampled_token(tokenizer, sampled, char) if char <= text_len else n
        else:
            ids, offsets, completion, start = _tokenized_side(tokenizer, record, side, prompt_text, special,
                                                               prompt_ids, separate)
            sources[side] = sampled

            def to_token(char: int, n: int, offsets=offsets, start=start, completion=completion) -> int:
                return _char_to_token(offsets, n, start + char, len(completion))
        if not ids:
            raise ValueError(f"the {side} completion is empty")
        if side == "rejected" and loop_end is not None:
            if cut_end is not None:  # --rejected-loop-copies: onset + K copies, no end of turn
                keep = to_token(cut_end, len(ids))
                cut_tokens, ids = max(0, len(ids) - keep), ids[:keep]
            rejected_keep = min(len(ids), to_token(loop_end, len(ids)))
        sides[side] = ids
    key = record.id or hashlib.blake2b(repr((record.prompt, record.chosen)).encode(), digest_size=8).hexdigest()
    return Example(key, prompt_ids, sides["chosen"], sides["rejected"], rejected_keep, sources=sources,
                   rejected_cut_tokens=cut_tokens)


def truncate(ex: Example, max_length: int, max_prompt_length: int | None, stats: Truncation,
             min_prompt: int = 8) -> Example | None:
    """Fit a pair into ``max_length`` tokens, or None (counted in ``stats.dropped``).

    The prompt keeps its end (the generation prompt and the text nearest the reply); completions keep
    their start. A rejected loop must keep its onset and several copies: when the cut would fall before
    that, the prompt gives up its start instead (down to ``min_prompt`` tokens), else the pair is dropped.
    """
    prompt = ex.prompt_ids
    if ex.vision is not None:
        min_prompt = len(prompt)  # cutting into a prompt would cut its image tokens: kept whole
    elif max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:]
    need = min(ex.rejected_keep, len(ex.rejected_ids)) if ex.rejected_keep else 1
    budget = max_length - len(prompt)
    moved = False
    if not ex.rejected_keep and budget < 1:
        stats.dropped["prompt_fills_max_length"] = stats.dropped.get("prompt_fills_max_length", 0) + 1
        return None
    if need > budget:
        keep = max_length - need  # prompt tokens left once the loop fits
        if keep < min(min_prompt, len(prompt)):
            stats.dropped["loop_outside_window"] = stats.dropped.get("loop_outside_window", 0) + 1
            return None
        prompt = prompt[len(prompt) - keep:]
        budget, moved = need, True
    stats.prompts_cut += len(prompt) < len(ex.prompt_ids)
    stats.chosen_cut += len(ex.chosen_ids) > budget
    stats.rejected_cut += len(ex.rejected_ids) > budget
    stats.loops_kept_by_moving_the_cut += moved
    return dataclasses.replace(ex, prompt_ids=prompt, chosen_ids=ex.chosen_ids[:budget],
                               rejected_ids=ex.rejected_ids[:budget])


def in_eval_split(key: str, fraction: float) -> bool:
    """Pairs of one document share its id, so they land on the same side of the split."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int,
                           group: int = 64) -> list[list[int]]:
    """Shuffled micro-batches of similar length (less padding), longest first (an OOM shows at once).

    Deterministic in (seed, epoch), so a resumed run replays the same order.
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        mega = sorted(order[start:start + span], key=lambda i: -lengths[i])
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches.insert(0, batches.pop(longest))
    return batches


def collate(examples: Iterable[Example], pad_id: int) -> dict[str, Any]:
    """Chosen rows then rejected rows, right-padded: input_ids, attention_mask, labels (2B, T); for image
    pairs also ``vision``, the extra inputs of each pair's prompt (B dicts)."""
    examples = list(examples)
    rows = [(e.prompt_ids, e.chosen_ids) for e in examples] + [(e.prompt_ids, e.rejected_ids) for e in examples]
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        seq = prompt + completion
        input_ids[i, :len(seq)] = torch.tensor(seq)
        labels[i, len(prompt):len(seq)] = torch.tensor(completion)
        attention_mask[i, :len(seq)] = 1
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if any(e.vision is not None for e in examples):
        # one entry per pair (not per row): the pair's prompt, and so its images, is encoded once
        batch["vision"] = [e.vision() if e.vision is not None else {} for e in examples]
    return batch


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """The batch on ``device``; a pair's vision inputs too."""
    out = {k: v.to(device) for k, v in batch.items() if k != "vision"}
    if "vision" in batch:
        out["vision"] = [{k: v.to(device) for k, v in pair.items()} for pair in batch["vision"]]
    return out


def data_digest(examples: list[Example]) -> str:
    """Content hash of the tokenised pairs (keys the reference log-prob cache)."""
    h = hashlib.blake2b(digest_size=16)
    for e in examples:
        h.update(repr((e.prompt_ids, e.chosen_ids, e.rejected_ids, e.image_digest)).encode())
    return h.hexdigest()
