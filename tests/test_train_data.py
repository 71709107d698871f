"""Tokenisation, the prompt boundary, loop-aware truncation, batching: pure functions, checked by hand."""

from __future__ import annotations

import pytest

from dpominer.records import Pair
from dpominer.train.data import (
    Example,
    Truncation,
    collate,
    in_eval_split,
    length_grouped_batches,
    tokenize_pair,
    truncate,
)

TEXT = "Return a formatted dump of the tree in node. This is mainly useful for debugging purposes."
UNIT = " the tree in node and"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def chat_pair(rejected_finish="length", start_char=None) -> Pair:
    rejected = TEXT[:30] + UNIT * 12
    scores = {"finish_reason": rejected_finish}
    if start_char is not None:
        scores |= {"start_char": start_char, "unit_len": len(UNIT), "copies": 12.0}
    return Pair.model_validate({
        "id": "d1", "prompt": [{"role": "user", "content": "Copy: " + TEXT}],
        "chosen": [{"role": "assistant", "content": TEXT}], "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_scores": {"finish_reason": "stop"}, "rejected_scores": scores})


def test_chat_pair_masks_exactly_the_rendered_prompt(tokenizer):
    ex = tokenize_pair(chat_pair(), tokenizer, loop_copies=4)
    prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": "Copy: " + TEXT}], tokenize=False,
                                                add_generation_prompt=True)
    assert ex.prompt_ids == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ex.chosen_ids) == TEXT + "<|im_end|>\n"  # ended on its own: the turn closes
    # the rejected side ran into max_tokens: trained on what the model wrote, with no end-of-turn it never wrote
    assert tokenizer.decode(ex.rejected_ids) == TEXT[:30] + UNIT * 12
    assert ex.rejected_keep is None  # no loop position given


def test_string_pairs_get_eos_only_when_the_completion_ended(tokenizer):
    record = Pair.model_validate({
        "prompt": "Copy: " + TEXT + "\n", "chosen": TEXT, "rejected": TEXT[:20] + UNIT * 5,
        "rejected_scores": {"finish_reason": "repetition"}})
    ex = tokenize_pair(record, tokenizer, loop_copies=4)
    assert ex.chosen_ids[-1] == tokenizer.eos_token_id
    assert ex.rejected_ids[-1] != tokenizer.eos_token_id
    assert tokenizer.decode(ex.prompt_ids + ex.chosen_ids[:-1]) == "Copy: " + TEXT + "\n" + TEXT
    plain = Pair.model_validate({"prompt": "Copy:\n", "chosen": "a", "rejected": "b"})  # TRL rows
    assert tokenize_pair(plain, tokenizer, loop_copies=4).rejected_ids[-1] == tokenizer.eos_token_id


def test_a_template_that_renders_the_prompt_differently_is_refused(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # "LAST:" marks the final user turn only while no reply follows: the prompt is not a prefix
    tok.chat_template = ("{% for m in messages %}{% if loop.last and m['role'] == 'user' %}LAST:{% endif %}"
                         "{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(ValueError, match="renders the prompt differently once a reply follows"):
        tokenize_pair(chat_pair(), tok, loop_copies=4)


def test_tokens_merging_across_the_boundary_are_named(tokenizer):
    # "communica|tion": a prompt that ends mid-word merges with the completion's first characters
    record = Pair.model_validate({"prompt": "all communica", "chosen": "tion is in bytes",
                                              "rejected": "tion tion tion"})
    with pytest.raises(ValueError, match=r"not a prefix of prompt\+chosen .*--tokenize-separately"):
        tokenize_pair(record, tokenizer, loop_copies=4)
    ex = tokenize_pair(record, tokenizer, loop_copies=4, separate=True)
    assert tokenizer.decode(ex.prompt_ids) == "all communica"
    assert tokenizer.decode(ex.chosen_ids[:-1]) == "tion is in bytes"


def test_loop_position_becomes_the_tokens_to_keep(tokenizer):
    start = 30
    ex = tokenize_pair(chat_pair(start_char=start), tokenizer, loop_copies=3)
    kept = tokenizer.decode(ex.rejected_ids[:ex.rejected_keep])
    assert kept.startswith(TEXT[:30] + UNIT * 3)  # onset and 3 copies are inside
    assert len(kept) < len(TEXT[:30] + UNIT * 5)


def ex(prompt: int, chosen: int, rejected: int, keep: int | None = None) -> Example:
    return Example("k", list(range(prompt)), list(range(100, 100 + chosen)), list(range(200, 200 + rejected)), keep)


def test_truncation_keeps_the_prompt_end_and_completion_starts():
    stats = Truncation()
    out = truncate(ex(30, 50, 80), max_length=64, max_prompt_length=20, stats=stats)
    assert out.prompt_ids == list(range(10, 30))  # the end of the prompt
    assert out.chosen_ids == list(range(100, 144)) and out.rejected_ids == list(range(200, 244))
    assert (stats.prompts_cut, stats.chosen_cut, stats.rejected_cut) == (1, 1, 1)


def test_truncation_moves_the_cut_to_keep_a_late_loop():
    stats = Truncation()
    # onset + copies end at rejected token 50; prompt 30 + 50 > 64, so the prompt gives up its first 16 tokens
    out = truncate(ex(30, 40, 120, keep=50), max_length=64, max_prompt_length=None, stats=stats)
    assert out.prompt_ids == list(range(16, 30))
    assert out.rejected_ids == list(range(200, 250)) and out.chosen_ids == list(range(100, 140))
    assert stats.loops_kept_by_moving_the_cut == 1
    # a loop that fits only beside fewer than 8 prompt tokens is dropped, not trained on as if it were clean text
    assert truncate(ex(30, 40, 120, keep=60), max_length=64, max_prompt_length=None, stats=stats) is None
    assert stats.dropped == {"loop_outside_window": 1}
    assert truncate(ex(70, 5, 5), max_length=64, max_prompt_length=None, stats=stats) is None
    assert stats.dropped["prompt_fills_max_length"] == 1


def test_length_grouped_batches_cover_every_pair_once_deterministically():
    lengths = [(i * 37) % 101 + 1 for i in range(300)]
    batches = length_grouped_batches(lengths, batch_size=4, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert batches == length_grouped_batches(lengths, batch_size=4, seed=3, epoch=1)
    assert batches != length_grouped_batches(lengths, batch_size=4, seed=3, epoch=2)
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest first: an OOM shows at step 1

    def padding(bs):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in bs)

    random_batches = [list(range(300))[i:i + 4] for i in range(0, 300, 4)]
    assert padding(batches) < padding(random_batches) / 5


def test_collate_puts_chosen_rows_first_and_masks_prompt_and_padding():
    batch = collate([ex(2, 3, 1), ex(1, 1, 4)], pad_id=9)
    assert batch["input_ids"].tolist() == [[0, 1, 100, 101, 102], [0, 100, 9, 9, 9],
                                           [0, 1, 200, 9, 9], [0, 200, 201, 202, 203]]
    assert batch["labels"].tolist() == [[-100, -100, 100, 101, 102], [-100, 100, -100, -100, -100],
                                        [-100, -100, 200, -100, -100], [-100, 200, 201, 202, 203]]
    assert batch["attention_mask"].sum(1).tolist() == [5, 2, 3, 5]


def test_eval_split_keeps_a_documents_pairs_together():
    keys = [f"doc-{i}" for i in range(2000)]
    held = [k for k in keys if in_eval_split(k, 0.1)]
    assert 150 < len(held) < 250
    assert all(in_eval_split(k, 0.1) for k in held)
    assert not any(in_eval_split(k, 0.0) for k in keys)


# --- sampled token ids (issue 13.2): train on what was sampled, fall back to tokenising


def sampled_pair(tokenizer, rejected_ids, chosen_ids=None, rendered=None, finish="length", loop=None) -> Pair:
    prompt = [{"role": "user", "content": "Copy: " + TEXT}]
    rendered = rendered if rendered is not None else tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=True)
    rejected = tokenizer.decode(rejected_ids, skip_special_tokens=True)
    return Pair.model_validate({
        "id": "d1", "prompt": prompt, "chosen": [{"role": "assistant", "content": TEXT}],
        "rejected": [{"role": "assistant", "content": rejected}], "rendered_prompt": rendered,
        "chosen_scores": {"finish_reason": "stop"}, "rejected_scores": {"finish_reason": finish, **(loop or {})},
        "rejected_token_ids": rejected_ids, "chosen_token_ids": chosen_ids})


def char_by_char(tokenizer, text: str) -> list[int]:
    """Ids that decode to ``text`` but are not how the tokenizer would split it (one token per character)."""
    return [i for ch in text for i in tokenizer(ch, add_special_tokens=False)["input_ids"]]


def test_sampled_token_ids_are_trained_on_as_they_are(tokenizer):
    text = TEXT[:30] + UNIT * 6
    ids = char_by_char(tokenizer, text)
    assert ids != tokenizer(text, add_special_tokens=False)["input_ids"]  # re-tokenising would change them
    record = sampled_pair(tokenizer, ids)
    ex = tokenize_pair(record, tokenizer, loop_copies=4)
    assert ex.rejected_ids == ids  # cut off: no end of turn, and exactly the sampled tokens
    assert ex.prompt_ids == tokenizer(record.rendered_prompt, add_special_tokens=False)["input_ids"]
    assert ex.sources == {"chosen": "not_in_pair", "rejected": "sampled"}
    assert tokenizer.decode(ex.chosen_ids) == TEXT + "<|im_end|>\n"  # the reference side: tokenised as before


def test_a_sampled_side_that_ended_gets_the_templates_end_of_turn(tokenizer):
    chosen_ids = char_by_char(tokenizer, TEXT)
    ex = tokenize_pair(sampled_pair(tokenizer, char_by_char(tokenizer, TEXT[:40]), chosen_ids=chosen_ids),
                       tokenizer, loop_copies=4)
    assert ex.chosen_ids[:len(chosen_ids)] == chosen_ids and ex.sources["chosen"] == "sampled"
    assert tokenizer.decode(ex.chosen_ids[len(chosen_ids):]) == "<|im_end|>\n"  # as the tokenised side ends


def test_sampled_ids_that_do_not_fit_fall_back_to_tokenising(tokenizer):
    ids = char_by_char(tokenizer, TEXT[:30] + UNIT * 6)
    tokenised = tokenize_pair(sampled_pair(tokenizer, ids), tokenizer, loop_copies=4).rejected_ids
    record = sampled_pair(tokenizer, ids)
    record.rejected_token_ids = ids[:-3]  # no longer the side's text (another tokenizer would do the same)
    ex = tokenize_pair(record, tokenizer, loop_copies=4)
    assert ex.sources["rejected"] == "token_ids_do_not_decode_to_text"
    assert ex.rejected_ids == tokenizer(record.rejected[-1].content, add_special_tokens=False)["input_ids"]
    assert tokenised == ids
    other = sampled_pair(tokenizer, ids, rendered="<|im_start|>system\nBe brief.<|im_end|>\n")  # another template
    assert tokenize_pair(other, tokenizer, loop_copies=4).sources["rejected"] == "rendered_prompt_differs"


def test_loop_onset_counts_in_sampled_tokens(tokenizer):
    start = 30
    ids = char_by_char(tokenizer, TEXT[:start] + UNIT * 12)
    loop = {"start_char": start, "unit_len": len(UNIT), "copies": 12.0}
    ex = tokenize_pair(sampled_pair(tokenizer, ids, loop=loop), tokenizer, loop_copies=3)
    assert ex.rejected_keep == len(TEXT[:start] + UNIT * 3)  # one token per character here


def test_rejected_loop_cut_to_onset_and_k_copies(tokenizer):
    # the rejected side is TEXT[:30] + 12 copies of a 21-character unit; the loop starts at char 30.
    # K = 2 keeps chars [0, 30 + 2·21) = the onset and two copies, nothing after, no end of turn
    whole = tokenize_pair(chat_pair(start_char=30), tokenizer, loop_copies=4)
    cut = tokenize_pair(chat_pair(start_char=30), tokenizer, loop_copies=4, rejected_loop_copies=2)
    assert tokenizer.decode(cut.rejected_ids) == TEXT[:30] + UNIT * 2
    assert cut.rejected_cut_tokens == len(whole.rejected_ids) - len(cut.rejected_ids) > 0
    assert cut.chosen_ids == whole.chosen_ids and cut.prompt_ids == whole.prompt_ids
    assert cut.rejected_keep == len(cut.rejected_ids)  # truncation keeps all of what is left
    # K above the copies the loop has, or a rejected side without a loop position: nothing is cut
    assert tokenize_pair(chat_pair(start_char=30), tokenizer, loop_copies=4,
                         rejected_loop_copies=20).rejected_ids == whole.rejected_ids
    plain = tokenize_pair(chat_pair(), tokenizer, loop_copies=4, rejected_loop_copies=2)
    assert plain.rejected_cut_tokens == 0 and tokenizer.decode(plain.rejected_ids) == TEXT[:30] + UNIT * 12


def test_a_loop_that_runs_to_the_last_sampled_token(tokenizer):
    """sample → score → pair → train's tokenisation, for a rejected side whose loop ends exactly at its last
    character (a whole number of copies, nothing after): --rejected-loop-copies K at or above its copies
    cuts nothing — the sampled ids stay as they are, its end of turn included when it ended on its own —
    and K below cuts at onset + K copies, in sampled tokens."""
    from conftest import PASSAGE, candidate_record

    from dpominer.pairing import PairConfig, make_pairs
    from dpominer.records import CandidateRecord
    from dpominer.scoring import ScoreConfig, score_record

    unit = " or if any input should be a string decoded according to locale encoding,"
    onset, copies = 60, 12
    loop_text = PASSAGE[:onset] + unit * copies  # the last character is the last copy's last
    ids = char_by_char(tokenizer, loop_text)
    for finish in ("length", "stop"):
        row = candidate_record("d1", [(PASSAGE, "stop"), (loop_text, finish)], messages=True)
        row["rendered_prompt"] = tokenizer.apply_chat_template(row["messages"], tokenize=False,
                                                               add_generation_prompt=True)
        row["candidates"][1]["token_ids"] = ids
        record = score_record(CandidateRecord.model_validate(row), ScoreConfig())
        (pair,) = make_pairs(record, PairConfig()).pairs
        scores = pair.rejected_scores
        assert (scores.start_char, scores.unit_len, scores.copies) == (onset, len(unit), copies)
        assert scores.loop_end(copies) == len(loop_text)  # the span ends on the side's last character
        whole = tokenize_pair(pair, tokenizer, loop_copies=4)
        end_of_turn = whole.rejected_ids[len(ids):]
        assert whole.sources["rejected"] == "sampled" and whole.rejected_ids[:len(ids)] == ids
        assert tokenizer.decode(end_of_turn) == ("<|im_end|>\n" if finish == "stop" else "")
        for k in (copies, copies + 5):
            kept = tokenize_pair(pair, tokenizer, loop_copies=4, rejected_loop_copies=k)
            assert kept.rejected_ids == whole.rejected_ids and kept.rejected_cut_tokens == 0, (finish, k)
            assert kept.rejected_keep == whole.rejected_keep
        tokenised = pair.model_copy(update={"rejected_token_ids": None})  # the same edge, tokenising the text
        assert tokenize_pair(tokenised, tokenizer, loop_copies=4, rejected_loop_copies=copies).rejected_ids == \
            tokenize_pair(tokenised, tokenizer, loop_copies=4).rejected_ids
        cut = tokenize_pair(pair, tokenizer, loop_copies=4, rejected_loop_copies=copies - 1)
        assert cut.rejected_ids == ids[:len(PASSAGE[:onset] + unit * (copies - 1))]  # one token per character
        assert cut.rejected_cut_tokens == len(unit) + len(end_of_turn)
