"""Image documents: the format, loading rules, path rewriting, and request building for every backend."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from conftest import PASSAGE, read_jsonl, write_jsonl
from PIL import Image
from typer.testing import CliRunner
from vlm_helpers import image_doc, render_page

from dpominer import images
from dpominer.cli import app
from dpominer.images import PdfPage
from dpominer.records import Document

GERMAN = ("Die Würde des Menschen ist unantastbar. Sie zu achten und zu schützen ist Verpflichtung aller "
          "staatlichen Gewalt.")


def test_exif_orientation_is_applied(tmp_path: Path):
    img = Image.new("RGB", (40, 20), "white")
    img.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    loaded = images.load("r.jpg", tmp_path)
    assert loaded.size == (20, 40)  # shown upright: width and height swap
    assert loaded.mode == "RGB"


def test_transparency_flattens_on_white_and_modes_become_rgb8(tmp_path: Path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert images.load("clear.png", tmp_path).getpixel((0, 0)) == (255, 255, 255)
    Image.new("LA", (4, 4), (0, 128)).save(tmp_path / "la.png")
    assert images.load("la.png", tmp_path).getpixel((0, 0)) == (127, 127, 127)  # half black on white
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(tmp_path / "p.png", transparency=1)
    assert images.load("p.png", tmp_path).getpixel((0, 0)) == (255, 255, 255)
    Image.new("CMYK", (4, 4), (0, 0, 0, 255)).save(tmp_path / "k.jpg")
    assert max(images.load("k.jpg", tmp_path).getpixel((0, 0))) < 20


def test_sixteen_bit_grey_scales_to_eight_bits(tmp_path: Path):
    import numpy as np

    grey = np.full((3, 3), 32896, dtype=np.uint16)  # 0x8080: mid-grey in 16 bits
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert images.load("g16.png", tmp_path).getpixel((1, 1)) == (128, 128, 128)  # not clipped to white


def test_first_frame_of_an_animation(tmp_path: Path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    r, g, b = images.load("a.gif", tmp_path).getpixel((0, 0))
    assert r > 200 and b < 50


def test_pdf_page_is_one_based_and_rendered_at_dpi(tmp_path: Path):
    pytest.importorskip("pypdfium2")
    pages = [Image.new("RGB", (72, 144), colour) for colour in ("white", "black")]
    pages[0].save(tmp_path / "doc.pdf", save_all=True, append_images=pages[1:], resolution=72)
    second = images.load(PdfPage(pdf="doc.pdf", page=2), tmp_path, dpi=144)
    assert second.size == (144, 288) and second.getpixel((10, 10)) == (0, 0, 0)
    assert images.load(PdfPage(pdf="doc.pdf", page=1), tmp_path, dpi=72).getpixel((10, 10)) == (255, 255, 255)
    with pytest.raises(ValueError, match="page 3 asked, the PDF has 2"):
        images.check(PdfPage(pdf="doc.pdf", page=3), tmp_path)


def test_document_validation():
    doc = image_doc("a", "p.png", "x")
    assert Document.model_validate(doc).images == ["p.png"]
    two_parts = json.loads(json.dumps(doc))
    two_parts["messages"][0]["content"].insert(0, {"type": "image"})
    with pytest.raises(ValueError, match="2 image content part"):
        Document.model_validate(two_parts)
    with pytest.raises(ValueError, match="'images' need 'messages'"):
        Document.model_validate({"id": "b", "prompt": "x", "images": ["p.png"]})
    with pytest.raises(ValueError, match="page"):
        Document.model_validate(image_doc("c", {"pdf": "d.pdf", "page": 0}, "x"))


def test_rebase_resolves_from_the_new_folder(tmp_path: Path):
    src, dst = tmp_path / "in", tmp_path / "out" / "deep"
    moved = images.rebase("pages/p1.png", src, dst)
    assert Path(dst, moved).resolve() == (src / "pages" / "p1.png").resolve()
    assert images.rebase(str(tmp_path / "abs.png"), src, dst) == "../../abs.png"
    page = images.rebase(PdfPage(pdf="d.pdf", page=2), src, dst)
    assert page.page == 2 and Path(dst, page.pdf).resolve() == (src / "d.pdf").resolve()


def test_sample_rejects_a_missing_image_with_its_line(tmp_path: Path, tiny_model: Path):
    render_page(PASSAGE, tmp_path / "pages" / "p1.png")
    docs = write_jsonl(tmp_path / "docs.jsonl", [image_doc("p1", "pages/p1.png", PASSAGE),
                                                  image_doc("p17", "pages/p17.png", PASSAGE)])
    out = tmp_path / "c.jsonl"
    result = CliRunner().invoke(app, ["sample", str(docs), "-o", str(out), "--model", str(tiny_model),
                                      "--backend", "hf", "-n", "1", "--max-tokens", "4"])
    assert result.exit_code == 1
    assert f"{docs}:2: images[0]: pages/p17.png: no such file" in " ".join(result.output.split())
    assert not out.exists()


def test_openai_messages_carry_the_pixels_as_data_urls():
    from dpominer.backends.openai import chat_messages

    page = Image.new("RGB", (8, 6), (10, 200, 30))
    msgs = image_doc("a", "p.png", "x")["messages"]
    (message,) = chat_messages(msgs, [page])
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": "Transcribe this page."}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 6) and decoded.convert("RGB").getpixel((3, 3)) == (10, 200, 30)
    assert msgs[0]["content"][0] == {"type": "image"}  # the document's own messages are left alone


def test_vllm_prompt_puts_pixels_under_multi_modal_data():
    from dpominer.backends import Request
    from dpominer.backends.vllm import engine_prompt

    page = Image.new("RGB", (8, 6), "white")
    one = Request("a", "<image>Transcribe", [1, 2], None, [0], 8, [page])
    assert engine_prompt(one) == {"prompt": "<image>Transcribe", "multi_modal_data": {"image": page}}
    two = Request("b", "<image><image>Both", [1, 2], None, [0], 8, [page, page])
    assert engine_prompt(two)["multi_modal_data"]["image"] == [page, page]
    assert engine_prompt(Request("c", "t", [5, 6], None, [0], 8)) == {"prompt_token_ids": [5, 6]}


def test_pairs_of_image_documents_feed_datasets_as_trl_vlm_rows(tmp_path: Path, monkeypatch):
    pytest.importorskip("datasets")
    from conftest import LOOP, candidate_record
    from datasets import Image as ImageFeature
    from datasets import Sequence, load_dataset

    from dpominer.mining import PairRunConfig, run_pair

    render_page(GERMAN, tmp_path / "run" / "pages" / "de.png")
    record = candidate_record("de", [(GERMAN, "stop"), (LOOP, "length")], reference=GERMAN, messages=True)
    record |= {"images": ["pages/de.png"], "messages": image_doc("de", "", GERMAN)["messages"]}
    cands = write_jsonl(tmp_path / "run" / "candidates.jsonl", [record])
    pairs = tmp_path / "elsewhere" / "pairs.jsonl"
    run_pair(cands, pairs, PairRunConfig())
    (row,) = read_jsonl(pairs)
    assert row["images"] == ["../run/pages/de.png"]
    assert row["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": GERMAN}]}]
    monkeypatch.chdir(pairs.parent)  # paths resolve from the pairs file's folder
    data = load_dataset("json", data_files=str(pairs), split="train").cast_column("images", Sequence(ImageFeature()))
    assert data[0]["images"][0].size == Image.open(tmp_path / "run" / "pages" / "de.png").size
    assert data[0]["prompt"][0]["content"][0]["type"] == "image"


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    from vlm_helpers import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


def test_hf_sample_on_a_vlm_records_images_and_refuses_long_prompts(tmp_path: Path, tiny_vlm: Path):
    from vlm_helpers import build_tiny_vlm

    render_page(PASSAGE, tmp_path / "docs" / "pages" / "en.png")
    render_page(GERMAN, tmp_path / "docs" / "pages" / "de.png")
    docs = write_jsonl(tmp_path / "docs" / "docs.jsonl", [image_doc("en", "pages/en.png", PASSAGE),
                                                           image_doc("de", "pages/de.png", GERMAN)])
    out = tmp_path / "runs" / "c.jsonl"
    args = ["sample", str(docs), "-o", str(out), "--backend", "hf", "-n", "3", "--max-tokens", "6", "-t", "1.0"]
    result = CliRunner().invoke(app, args + ["--model", str(tiny_vlm)])
    assert result.exit_code == 0, result.output
    en, de = read_jsonl(out)
    assert en["images"] == ["../docs/pages/en.png"] and len(en["candidates"]) == 3
    assert en["prompt_tokens"] > 16  # the 16 image tokens of the tiny CLIP tower are counted
    info = en["image_info"][0]
    assert (info["width"], info["height"]) == Image.open(tmp_path / "docs" / "pages" / "en.png").size
    assert info["blake2b"] != de["image_info"][0]["blake2b"]
    assert len({c["text"] for c in en["candidates"]}) > 1  # sampled, each with its own seed stream row
    short = build_tiny_vlm(tmp_path / "short", max_positions=24)  # fewer positions than image + prompt tokens
    result = CliRunner().invoke(app, args[:3] + [str(tmp_path / "short.jsonl")] + args[4:] + ["--model", str(short)])
    assert result.exit_code == 0, result.output
    record = read_jsonl(tmp_path / "short.jsonl")[0]
    assert record["candidates"] == [] and "the model's context is 24" in record["error"]


def test_a_text_model_refuses_image_documents_per_document(tmp_path: Path, tiny_model: Path):
    render_page(PASSAGE, tmp_path / "p.png")
    docs = write_jsonl(tmp_path / "docs.jsonl", [image_doc("en", "p.png", PASSAGE)])
    result = CliRunner().invoke(app, ["sample", str(docs), "-o", str(tmp_path / "c.jsonl"), "--model",
                                      str(tiny_model), "--backend", "hf", "-n", "1", "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert "takes no images" in read_jsonl(tmp_path / "c.jsonl")[0]["error"]


def test_report_shows_the_page_of_each_example_pair(tmp_path: Path):
    render_page(GERMAN, tmp_path / "data" / "de.png")
    chosen = [{"role": "assistant", "content": [{"type": "text", "text": GERMAN}]}]
    rejected = [{"role": "assistant", "content": [{"type": "text", "text": GERMAN[:20] + " und so" * 30}]}]
    pair = {"id": "de", "images": ["../data/de.png"], "prompt": image_doc("de", "", "")["messages"],
            "chosen": chosen, "rejected": rejected, "reason": "rejected_degenerate", "chosen_source": "reference",
            "rejected_index": 0, "rejected_scores": {"verdict": "degenerate", "start_char": 20, "unit_len": 8}}
    gone = pair | {"id": "gone", "images": ["../data/gone.png"]}
    (tmp_path / "pairs").mkdir()
    pairs = write_jsonl(tmp_path / "pairs" / "pairs.jsonl", [pair, gone])
    result = CliRunner().invoke(app, ["report", str(pairs), "-o", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img class=page") == 1 and "<th>page</th>" in page
    assert "images[0]: ../data/gone.png: no such file" in page
    assert "<mark>" in page and "Würde" in page


def test_merge_rewrites_image_paths_of_shards_in_other_folders(tmp_path: Path):
    from conftest import candidate_record

    shard = candidate_record("a", [(PASSAGE, "stop")], messages=True)
    shard |= {"images": ["../pages/a.png"], "messages": image_doc("a", "", "")["messages"]}
    same = shard | {"id": "b", "images": ["pages/b.png"]}
    (tmp_path / "shard0").mkdir()
    first = write_jsonl(tmp_path / "shard0" / "0.jsonl", [shard])
    second = write_jsonl(tmp_path / "1.jsonl", [same])
    result = CliRunner().invoke(app, ["merge", str(first), str(second), "-o", str(tmp_path / "all.jsonl")])
    assert result.exit_code == 0, result.output
    assert [r["images"] for r in read_jsonl(tmp_path / "all.jsonl")] == [["pages/a.png"], ["pages/b.png"]]


def test_text_parts_without_images_reach_a_text_model_as_a_string(tiny_model: Path):
    from transformers import AutoTokenizer

    from dpominer.sample import render

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    parts = Document.model_validate({"id": "a", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Copy: "}, {"type": "text", "text": PASSAGE}]}]})
    plain = Document.model_validate({"id": "b", "messages": [{"role": "user", "content": "Copy: " + PASSAGE}]})
    assert render(parts, tokenizer, None)[:2] == render(plain, tokenizer, None)[:2]
