"""VLM DPO on a tiny random LLaVA-style model: image tokens at the boundary, one image encoding per pair,
the cached reference, frozen or trained vision tower, and an output folder that loads with its processor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import candidate_record, read_jsonl, write_jsonl
from typer.testing import CliRunner
from vlm_helpers import build_tiny_vlm, image_doc, render_page

from dpominer.cli import app
from dpominer.mining import PairRunConfig, run_pair

PASSAGES = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"
FRENCH = "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison."


@pytest.fixture(scope="module")
def vlm(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


@pytest.fixture(scope="module")
def image_pairs(tmp_path_factory) -> Path:
    """Pairs from page images of real text (English docstrings and French), loops as rejected sides."""
    root = tmp_path_factory.mktemp("pairs")
    texts = [json.loads(line)["text"][:160] for line in PASSAGES.open()][:5] + [FRENCH]
    rows = []
    for i, text in enumerate(texts):
        render_page(text, root / "pages" / f"p{i}.png")
        loop = text[:30] + " und so weiter," * (6 + i)
        record = candidate_record(f"p{i}", [(text, "stop"), (loop, "length")], reference=text, messages=True)
        rows.append(record | {"images": [f"pages/p{i}.png"], "messages": image_doc("", "", "")["messages"]})
    write_jsonl(root / "candidates.jsonl", rows)
    run_pair(root / "candidates.jsonl", root / "out" / "pairs.jsonl", PairRunConfig())
    return root / "out" / "pairs.jsonl"


def _batch(vlm: Path, pairs: Path, n: int = 2):
    from dpominer.multimodal import load_processor
    from dpominer.train.data import PreferenceRecord, collate
    from dpominer.train.vision import tokenize_image_pair

    processor = load_processor(str(vlm))
    records = [PreferenceRecord.model_validate(row) for row in read_jsonl(pairs)[:n]]
    examples = [tokenize_image_pair(r, processor, base=pairs.parent, dpi=150, loop_copies=4) for r in records]
    return examples, collate(examples, processor.tokenizer.pad_token_id)


def test_image_tokens_sit_in_the_prompt_and_the_boundary_holds(vlm: Path, image_pairs: Path):
    from transformers import AutoConfig

    examples, batch = _batch(vlm, image_pairs)
    image_id = AutoConfig.from_pretrained(vlm).image_token_index
    for ex in examples:
        assert ex.prompt_ids.count(image_id) == 16  # (32 / 8)² patches, CLS dropped ("default" strategy)
        assert image_id not in ex.chosen_ids + ex.rejected_ids
    assert [v["pixel_values"].shape for v in batch["vision"]] == [torch.Size([1, 3, 32, 32])] * 2


def test_one_image_encoding_per_pair_and_the_same_numbers_as_a_call_per_row(vlm: Path, image_pairs: Path):
    from dpominer.multimodal import load_model
    from dpominer.train.logps import CompletionLogps

    model = load_model(str(vlm), torch.float32).eval()
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    _, batch = _batch(vlm, image_pairs, n=3)
    with torch.no_grad():
        shared = CompletionLogps(model)
        shared.share_prompts = True  # skip the one-off check: count the training calls alone
        tree, counts = shared(**batch)
        assert len(calls) == 3  # three pairs, three page encodings (TRL: six)
        per_row = CompletionLogps(model)
        per_row.share_prompts = False
        rows, _ = per_row(**batch)
        assert len(calls) == 3 + 6
        plain = model(input_ids=batch["input_ids"][:1, :int(batch["attention_mask"][0].sum())],
                      **batch["vision"][0]).logits[0].log_softmax(-1)
    torch.testing.assert_close(tree, rows, rtol=1e-5, atol=1e-4)
    labels = batch["labels"][0, 1:int(batch["attention_mask"][0].sum())]
    by_hand = plain[:-1][labels != -100].gather(1, labels[labels != -100, None]).sum()
    torch.testing.assert_close(tree[0], by_hand, rtol=1e-5, atol=1e-4)


def _train(pairs: Path, out: Path, vlm: Path, *flags: str):
    args = ["train", str(pairs), "-o", str(out), "--model", str(vlm), "--max-steps", "2", "--batch-size", "2",
            "--save-every", "0", "--threads", "1"]
    return CliRunner().invoke(app, args + list(flags))


def test_frozen_vision_full_training_and_the_output_loads(tmp_path: Path, vlm: Path, image_pairs: Path, monkeypatch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    result = _train(image_pairs, tmp_path / "frozen", vlm, "--lr", "1e-3")
    assert result.exit_code == 0, result.output
    before = AutoModelForImageTextToText.from_pretrained(vlm)
    after = AutoModelForImageTextToText.from_pretrained(tmp_path / "frozen")
    AutoProcessor.from_pretrained(tmp_path / "frozen")  # the processor is saved beside the weights
    vision = [n for n, _ in before.named_parameters() if "vision_tower" in n or "projector" in n]
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    assert all(torch.equal(b[n], a[n]) for n in vision)
    assert not torch.equal(b["model.language_model.layers.0.mlp.up_proj.weight"],
                           a["model.language_model.layers.0.mlp.up_proj.weight"])
    metrics = read_jsonl(tmp_path / "frozen" / "metrics.jsonl")
    assert abs(metrics[0]["loss"] - 0.693147) < 1e-4  # policy = reference at the first step
    again = _train(image_pairs, tmp_path / "trained", vlm, "--lr", "1e-3", "--no-freeze-vision")
    assert again.exit_code == 0, again.output
    trained = dict(AutoModelForImageTextToText.from_pretrained(tmp_path / "trained").named_parameters())
    assert any(not torch.equal(b[n], trained[n]) for n in vision)
    # the second run read the reference log-probs the first one cached
    assert read_jsonl(tmp_path / "trained" / "metrics.jsonl")[0]["loss"] == pytest.approx(metrics[0]["loss"])


def test_lora_targets_the_language_model_and_merges(tmp_path: Path, vlm: Path, image_pairs: Path, monkeypatch):
    pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    result = _train(image_pairs, tmp_path / "lora", vlm, "--lora", "--lora-r", "4", "--merge")
    assert result.exit_code == 0, result.output
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora")
    before = dict(AutoModelForImageTextToText.from_pretrained(vlm).named_parameters())
    changed = {n for n, p in merged.named_parameters() if not torch.equal(before[n], p)}
    assert changed and not any("vision_tower" in n or "projector" in n for n in changed)


def test_image_pairs_need_their_images_and_an_image_model(tmp_path: Path, vlm: Path, image_pairs: Path,
                                                          tiny_model: Path):
    rows = read_jsonl(image_pairs)
    rows[1]["images"] = ["pages/gone.png"]
    broken = write_jsonl(image_pairs.with_name("broken.jsonl"), rows)  # beside the pairs: the same paths resolve
    result = _train(broken, tmp_path / "out", vlm)
    assert result.exit_code == 1
    assert f"{broken}:2: images[0]: pages/gone.png: no such file" in " ".join(result.output.split())
    result = _train(image_pairs, tmp_path / "text", tiny_model)
    assert result.exit_code == 1 and "takes no images" in result.output


def test_resume_from_a_checkpoint_replays_the_same_trajectory(tmp_path: Path, vlm: Path, image_pairs: Path,
                                                              monkeypatch):
    import shutil

    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    flags = ("--lr", "1e-3", "--max-steps", "4", "--save-every", "2",
             "--eval-fraction", "0.3")
    result = _train(image_pairs, tmp_path / "whole", vlm, *flags)
    assert result.exit_code == 0, result.output
    whole = read_jsonl(tmp_path / "whole" / "metrics.jsonl")
    assert "eval/loss" in whole[-1]
    # a run stopped after its step-2 checkpoint: no final model yet
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    for name in ("model.safetensors", "config.json"):
        (tmp_path / "cut" / name).unlink()
    result = _train(image_pairs, tmp_path / "cut", vlm, *flags, "--resume")
    assert result.exit_code == 0, result.output
    resumed = read_jsonl(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in whole], abs=1e-6)
