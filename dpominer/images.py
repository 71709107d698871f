"""Page images of vision-language documents: references, loading, and paths that move with the files.

A document names its images in ``"images"`` (TRL's VLM convention): a path relative to the JSONL file's
folder (or absolute), or a PDF page ``{"pdf": path, "page": N}`` with N 1-based, as viewers and
``pdftoppm -f`` count. One ``{"type": "image"}`` content part per image, in order.

Images load as a viewer shows them: EXIF orientation applied, transparency flattened on white, any mode
or bit depth to 8-bit RGB, the first frame of a multi-frame file; a PDF page is rendered at ``dpi``.
Outputs never hold pixels: each stage rewrites the references so they resolve from its output's folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DPI = 150


class PdfPage(BaseModel):
    """One page of a PDF file; ``page`` counts from 1."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pdf: str
    page: int = Field(ge=1)


ImageRef = str | PdfPage


def ref_path(ref: ImageRef) -> str:
    return ref if isinstance(ref, str) else ref.pdf


def describe(ref: ImageRef) -> str:
    return ref if isinstance(ref, str) else f"{ref.pdf} page {ref.page}"


def resolve(ref: ImageRef, base: Path) -> ImageRef:
    """The reference with its path made absolute against ``base`` (the folder of the file naming it)."""
    path = ref_path(ref)
    full = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
    return full if isinstance(ref, str) else PdfPage(pdf=full, page=ref.page)


def rebase(ref: ImageRef, src_dir: Path, dst_dir: Path) -> ImageRef:
    """A reference read from a file in ``src_dir``, rewritten to resolve from a file in ``dst_dir``:
    relative when both sit on one drive, else absolute."""
    full = ref_path(resolve(ref, src_dir))
    try:
        path = os.path.relpath(full, os.path.abspath(dst_dir))
    except ValueError:  # another drive (Windows): only an absolute path works
        path = full
    return path if isinstance(ref, str) else PdfPage(pdf=path, page=ref.page)


def dump_refs(refs: list[ImageRef]) -> list[Any]:
    return [r if isinstance(r, str) else r.model_dump() for r in refs]


def rebase_record(data: dict[str, Any], src_dir: Path, dst_dir: Path) -> dict[str, Any]:
    """``data`` with its ``images`` (if any) rewritten from ``src_dir`` to ``dst_dir`` (a new dict)."""
    if not data.get("images"):
        return data
    refs = [r if isinstance(r, str) else PdfPage.model_validate(r) for r in data["images"]]
    return data | {"images": dump_refs([rebase(r, src_dir, dst_dir) for r in refs])}


# ---------------------------------------------------------------------------------------------- loading


def check(ref: ImageRef, base: Path) -> None:
    """Cheap check before any model loads: the file exists, its header reads, a PDF has the page.
    Raises ValueError with what is wrong (the caller adds ``path:LINE: images[i]``)."""
    full = ref_path(resolve(ref, base))
    if not os.path.exists(full):
        raise ValueError(f"{ref_path(ref)}: no such file")
    if isinstance(ref, PdfPage):
        pages = _pdf_page_count(full, ref.pdf)
        if ref.page > pages:
            raise ValueError(f"{ref.pdf}: page {ref.page} asked, the PDF has {pages}")
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(full) as img:
            img.size  # noqa: B018 — the header is parsed on open; size proves it
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{ref}: not a readable image ({exc.__class__.__name__})") from None


def _pdf_page_count(full: str, shown: str) -> int:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise ValueError(f"{shown}: PDF pages need pypdfium2: pip install 'dpominer[images]'") from None
    try:
        pdf = pdfium.PdfDocument(full)
    except pdfium.PdfiumError as exc:
        raise ValueError(f"{shown}: not a readable PDF ({exc})") from None
    try:
        return len(pdf)
    finally:
        pdf.close()


def load(ref: ImageRef, base: Path, dpi: int = DEFAULT_DPI):
    """The image as an 8-bit RGB PIL image, as a viewer shows it. Raises ValueError when unreadable."""
    full = ref_path(resolve(ref, base))
    if not os.path.exists(full):
        raise ValueError(f"{ref_path(ref)}: no such file")
    if isinstance(ref, PdfPage):
        return _render_pdf_page(full, ref, dpi)
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(full) as img:
            img.seek(0)  # the first frame of a GIF, TIFF or APNG
            img.load()
            oriented = ImageOps.exif_transpose(img)  # a copy with the EXIF orientation applied
    except (UnidentifiedImageError, OSError, EOFError) as exc:
        raise ValueError(f"{ref}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return to_rgb8(oriented)


def _render_pdf_page(full: str, ref: PdfPage, dpi: int):
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(full)
    except pdfium.PdfiumError as exc:
        raise ValueError(f"{ref.pdf}: not a readable PDF ({exc})") from None
    try:
        if ref.page > len(pdf):
            raise ValueError(f"{ref.pdf}: page {ref.page} asked, the PDF has {len(pdf)}")
        page = pdf[ref.page - 1]
        # a white page under the content, as a viewer draws it (no alpha channel)
        image = page.render(scale=dpi / 72, fill_color=(255, 255, 255, 255)).to_pil()
        page.close()
    finally:
        pdf.close()
    return to_rgb8(image)


def to_rgb8(img):
    """Any PIL mode and bit depth → 8-bit RGB; transparency flattened on white."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np

        values = np.asarray(img, dtype=np.float64)
        # 16-bit samples (PIL opens a 16-bit PNG as I or I;16) scale down by 257; 8-bit ones stay
        high = 65535.0 if values.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        img = Image.fromarray(np.clip(np.rint(values * 255.0 / high), 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def fingerprint(img) -> dict[str, Any]:
    """Size and a hash of the pixels the model sees (stable across file formats of the same image)."""
    digest = hashlib.blake2b(f"{img.width}x{img.height}:".encode() + img.tobytes(), digest_size=16).hexdigest()
    return {"width": img.width, "height": img.height, "blake2b": digest}


def load_all(refs: list[ImageRef], base: Path, dpi: int = DEFAULT_DPI) -> list:
    """Every image of a document; a ValueError names which one failed (``images[i]: …``)."""
    out = []
    for i, ref in enumerate(refs):
        try:
            out.append(load(ref, base, dpi))
        except ValueError as exc:
            raise ValueError(f"images[{i}]: {exc}") from None
    return out


def data_url(img, fmt: str = "PNG") -> str:
    """A base64 ``data:`` URL of the image (what OpenAI-compatible servers take as ``image_url``)."""
    import base64
    import io

    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()
