"""Image pairs → token ids and extra inputs, through the model's processor.

The processor renders the chat template with the image placeholders and expands each into the model's
image tokens. The boundary check of the text path holds unchanged: the prompt rendered alone must be a
prefix of the prompt rendered with the reply, and its *expanded* tokens a prefix of the whole sequence's.
The pixels (``pixel_values``, ``image_sizes``, ``image_grid_thw``, … whatever the processor returns) are
loaded again when a batch is built, and checked to expand to the same prompt tokens.
"""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

from .. import images as page_images
from .. import multimodal
from .data import (
    Example,
    PreferenceRecord,
    _char_to_token,
    _completion_text,
    _first_difference,
    _tokens_with_offsets,
)


def vision_inputs(processor, refs: list, base: Path, dpi: int, prompt_text: str, prompt_ids: list[int]) -> dict:
    """The extra inputs of a pair's prompt; an error when its images no longer give the same tokens."""
    enc = multimodal.encode(processor, prompt_text, page_images.load_all(refs, base, dpi))
    if enc.pop("input_ids") != prompt_ids:
        raise ValueError(f"images {[page_images.describe(r) for r in refs]} changed since the pairs were read")
    return enc


def tokenize_image_pair(record: PreferenceRecord, processor, *, base: Path, dpi: int, loop_copies: int) -> Example:
    """Tokenise both sides of an image pair; ValueError (with the reason) when the boundary does not hold."""
    tokenizer = processor.tokenizer
    refs = record.images or []
    pictures = page_images.load_all(refs, base, dpi)
    sides: dict[str, list[int]] = {}
    prompt_ids: list[int] = []
    prompt_text = ""
    rejected_keep = None
    for side in ("chosen", "rejected"):
        prompt_text, completion, content_start = _completion_text(processor, record, side)
        prompt_ids = multimodal.encode(processor, prompt_text, pictures)["input_ids"]
        full_ids = multimodal.encode(processor, prompt_text + completion, pictures)["input_ids"]
        if full_ids[:len(prompt_ids)] != prompt_ids:
            at = _first_difference(prompt_ids, full_ids)
            raise ValueError(
                f"the prompt's tokens (image tokens expanded) are not a prefix of prompt+{side} (token {at}: "
                f"{tokenizer.decode(prompt_ids[at:at + 3])!r} alone vs {tokenizer.decode(full_ids[at:at + 3])!r})")
        ids = full_ids[len(prompt_ids):]
        if not ids:
            raise ValueError(f"the {side} completion is empty")
        sides[side] = ids
        scores = record.rejected_scores
        if side == "rejected" and scores.get("start_char") is not None and scores.get("unit_len"):
            alone, offsets = _tokens_with_offsets(tokenizer, completion, False)
            copies = min(float(scores.get("copies") or loop_copies), loop_copies)
            end_char = content_start + int(scores["start_char"] + copies * scores["unit_len"])
            rejected_keep = _char_to_token(offsets if alone == ids else None, len(ids), end_char, len(completion))
    digest = hashlib.blake2b(digest_size=16)
    for picture in pictures:
        digest.update(page_images.fingerprint(picture)["blake2b"].encode())
    key = record.id or hashlib.blake2b(repr((record.prompt, record.chosen)).encode(), digest_size=8).hexdigest()
    loader = partial(vision_inputs, processor, refs, base, dpi, prompt_text, prompt_ids)
    return Example(key, prompt_ids, sides["chosen"], sides["rejected"], rejected_keep, loader, digest.hexdigest())
