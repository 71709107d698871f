"""Tiny random vision-language models and page images rendered from real text, for the tests.

The model is LLaVA-style: a 1-layer CLIP vision tower (32×32 pixels, 8×8 patches → 16 image tokens) and
the 2-layer Llama of conftest, with ``LlavaProcessor`` + ``CLIPImageProcessor`` (its PIL backend: no
torchvision needed). About 550 kB on disk, built in ~1.5 s.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from conftest import build_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "ocr"))
from make_pages import font as page_font  # noqa: E402 — the OCR example's typeface, one loader for both

VLM_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_vlm(path: Path, seed: int = 0, max_positions: int = 512, image_size: int = 32) -> Path:
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    text_dir = build_tiny_model(path.with_name(path.name + "-text"), seed=seed, max_positions=max_positions)
    tok = AutoTokenizer.from_pretrained(text_dir)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                            crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=8,
                               vision_feature_select_strategy="default", chat_template=VLM_TEMPLATE,
                               num_additional_image_tokens=1)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=8, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                       tie_word_embeddings=True)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def render_page(text: str, path: Path, width: int = 480, size: int = 16) -> Path:
    """The text typeset on a white page (wrapped to ``width`` pixels), saved as ``path``."""
    from PIL import Image, ImageDraw

    font = page_font(size)
    lines = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, width=max(8, width // (size // 2 + 1))) or [""]
    height = 20 + len(lines) * (size + 4)
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((10, 10 + i * (size + 4)), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path)
    return path


def image_doc(doc_id: str, image: str | dict, reference: str, task: str = "Transcribe this page.") -> dict:
    return {"id": doc_id, "images": [image], "reference": reference,
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": task}]}]}
