"""The whole pipeline on image documents, through the CLI: sample → pair → train → eval → report, on a tiny
random LLaVA-style VLM and pages rendered from real text (English, German, Japanese). Marked `real`: the
eval stage samples in child processes (≈ 1 min on a loaded 2-core box); each stage has its fast test too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import read_jsonl, write_jsonl
from typer.testing import CliRunner
from vlm_helpers import build_tiny_vlm, image_doc, render_page

from dpominer.cli import app

PASSAGES = Path(__file__).parents[1] / "bench" / "data" / "passages.jsonl"
OTHERS = ["Die Würde des Menschen ist unantastbar.",
          "すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。"]


def _ok(*args: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.mark.real
def test_image_documents_through_every_stage(tmp_path: Path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("DPOMINER_CACHE", str(tmp_path / "cache"))
    vlm = build_tiny_vlm(tmp_path / "vlm")
    texts = [json.loads(line)["text"][:120] for line in PASSAGES.open()][:2] + OTHERS
    rows = []
    for i, text in enumerate(texts):
        render_page(text, tmp_path / "data" / "pages" / f"p{i}.png")
        rows.append(image_doc(f"p{i}", f"pages/p{i}.png", text))
    pdf_page = tmp_path / "data" / "scan.pdf"
    Image.open(tmp_path / "data" / "pages" / "p0.png").save(pdf_page, resolution=150)
    rows.append(image_doc("scan", {"pdf": "scan.pdf", "page": 1}, texts[0]))
    docs = write_jsonl(tmp_path / "data" / "docs.jsonl", rows)

    runs = tmp_path / "runs"
    common = ("--model", vlm, "--backend", "hf", "--max-tokens", "24")
    # T=1: greedy decoding of a random tiny VLM writes only newlines, and a blank side is never paired
    _ok("sample", docs, "-o", runs / "candidates.jsonl", "-n", "2", "-t", "1.0", *common)
    _ok("pair", runs / "candidates.jsonl", "-o", runs / "pairs" / "pairs.jsonl")
    pairs = read_jsonl(runs / "pairs" / "pairs.jsonl")
    assert pairs and all(str(p["images"][0]).startswith(("../../data/", "{'pdf': '../../data/")) for p in pairs)
    assert any(p["images"][0] == {"pdf": "../../data/scan.pdf", "page": 1} for p in pairs)
    _ok("train", runs / "pairs" / "pairs.jsonl", "-o", runs / "model", "--model", vlm, "--max-steps", "1",
        "--batch-size", "2", "--save-every", "0", "--lora", "--lora-r", "4", "--merge")
    # the base model's candidates are those sampled above; the trained one loads with its class and samples
    _ok("eval", docs, "-o", runs / "eval", "--model", runs / "model", "--candidates", runs / "candidates.jsonl",
        "--backend", "hf", "--max-tokens", "24", "-t", "0")
    result = json.loads((runs / "eval" / "eval.json").read_text())
    assert [m["documents"] for m in result["models"]] == [len(rows)] * 2
    assert read_jsonl(runs / "eval" / "model.candidates.jsonl")[0]["images"] == ["../../data/pages/p0.png"]
    _ok("report", runs / "pairs" / "pairs.jsonl", runs / "eval", runs / "model", "-o", runs / "report.html")
    page = (runs / "report.html").read_text()
    assert page.count("<img class=page") >= 1 and "<th>page</th>" in page
