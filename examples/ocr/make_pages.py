"""Page images of real text, and the image documents that ask a VLM to transcribe them.

    python examples/ocr/make_pages.py OUT_DIR [--english 24] [--heldout 0.3]

Text: pages of this Python's standard-library docstrings (as examples/degeneration uses; PSF licence)
and Article 1 of the Universal Declaration of Human Rights in seven languages (UN translations). Each page
is typeset with Pillow (DejaVu Sans where installed, else Pillow's own font) on a white page; a few pages
are also bound into one PDF and referenced as ``{"pdf", "page"}`` (1-based) to show that path too.

Writes OUT_DIR/pages/*.png, OUT_DIR/pages.pdf, OUT_DIR/mining.jsonl and OUT_DIR/heldout.jsonl (split by
source: a module's paragraphs or a language's article on one side only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "degeneration"))
from make_docs import documents  # noqa: E402 — the docstring pages of the degeneration example

TASK = "Transcribe the text on this page exactly."
UDHR_1 = {
    "fr": "Tous les êtres humains naissent libres et égaux en dignité et en droits. Ils sont doués de raison et "
          "de conscience et doivent agir les uns envers les autres dans un esprit de fraternité.",
    "de": "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft und Gewissen "
          "begabt und sollen einander im Geist der Brüderlichkeit begegnen.",
    "es": "Todos los seres humanos nacen libres e iguales en dignidad y derechos y, dotados como están de razón y "
          "conciencia, deben comportarse fraternalmente los unos con los otros.",
    "pl": "Wszyscy ludzie rodzą się wolni i równi pod względem swej godności i swych praw. Są oni obdarzeni "
          "rozumem i sumieniem i powinni postępować wobec innych w duchu braterstwa.",
    "el": "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα. Είναι "
          "προικισμένοι με λογική και συνείδηση, και οφείλουν να συμπεριφέρονται μεταξύ τους με πνεύμα "
          "αδελφοσύνης.",
    "ru": "Все люди рождаются свободными и равными в своем достоинстве и правах. Они наделены разумом и "
          "совестью и должны поступать в отношении друг друга в духе братства.",
    "tr": "Bütün insanlar hür, haysiyet ve haklar bakımından eşit doğarlar. Akıl ve vicdana sahiptirler ve "
          "birbirlerine karşı kardeşlik zihniyeti ile hareket etmelidirler.",
}


def font(size: int):
    """DejaVu Sans at ``size`` where installed, else Pillow's own font (tests/vlm_helpers.py uses it too)."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def render_page(text: str, path: Path, width: int = 640, size: int = 18):
    """The text wrapped to ``width`` pixels on a white page; returns the image (also saved to ``path``)."""
    from PIL import Image, ImageDraw

    face = font(size)
    lines = []
    for line in text.split("\n"):  # the page keeps the text's line breaks (its reference has them)
        lines += textwrap.wrap(line, width=max(8, int(width / (size * 0.55)))) or [""]
    page = Image.new("RGB", (width + 40, 40 + len(lines) * (size + 6)), "white")
    draw = ImageDraw.Draw(page)
    for i, line in enumerate(lines):
        draw.text((20, 20 + i * (size + 6)), line, fill="black", font=face)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path)
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--english", type=int, default=24, help="docstring pages to render")
    parser.add_argument("--heldout", type=float, default=0.3, help="share of sources held out")
    args = parser.parse_args()
    texts = [(module, text) for (module, text), _ in zip(documents(), range(args.english), strict=False)]
    texts += [(f"udhr-{lang}", text) for lang, text in UDHR_1.items()]
    sides: dict[str, list[dict]] = {"mining": [], "heldout": []}
    bound = []
    for i, (source, text) in enumerate(texts):
        page = render_page(text, args.out / "pages" / f"p{i:03d}.png")
        if i % 8 == 0:  # every 8th page also through a PDF
            bound.append(page)
            image: str | dict = {"pdf": "pages.pdf", "page": len(bound)}
        else:
            image = f"pages/p{i:03d}.png"
        held = int.from_bytes(hashlib.blake2b(source.encode(), digest_size=8).digest(), "big") / 2**64 < args.heldout
        sides["heldout" if held else "mining"].append({
            "id": f"p{i:03d}", "images": [image], "reference": text, "meta": {"source": source},
            "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": TASK}]}]})
    bound[0].save(args.out / "pages.pdf", save_all=True, append_images=bound[1:], resolution=150)
    for side, rows in sides.items():
        with (args.out / f"{side}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        print(f"{len(rows)} page documents → {args.out / f'{side}.jsonl'}")


if __name__ == "__main__":
    main()
