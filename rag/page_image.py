"""A PDF page as an image with a cited passage highlighted (what a citation opens in the app).

Usage::

    from rag.page_image import render_page
    png = render_page("paper.pdf", page=3, boxes=[(3, (72.0, 90.5, 523.0, 104.2))])   # PNG bytes

``boxes`` are ``(page number, (x0, top, x1, bottom))`` in PDF points with the origin at the
top-left of the displayed page, as stored with each chunk (ingest.passage_boxes); boxes of other
pages are ignored. pypdfium2 renders the page (it applies the page's /Rotate, so the frame
matches); the highlight is a translucent yellow fill with an outline, drawn with Pillow.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Sequence

DEFAULT_SCALE = 1.5
"""Pixels per point: 108 dpi, sharp enough to read on screen, about 900 px wide for A4."""
HIGHLIGHT_FILL = (255, 214, 0, 90)
HIGHLIGHT_OUTLINE = (230, 150, 0, 255)
PAD_POINTS = 1.5


class PageUnavailable(ValueError):
    """The page cannot be shown: the file is gone or unreadable, or it has no such page."""


def render_page(path: str | Path, page: int, boxes: Sequence[tuple[int, Sequence[float]]] = (),
                scale: float = DEFAULT_SCALE) -> bytes:
    """PNG bytes of page ``page`` (1-based) of the PDF at ``path`` with ``boxes`` on it highlighted."""
    import pypdfium2 as pdfium
    from PIL import Image, ImageDraw

    try:
        pdf = pdfium.PdfDocument(str(path))
    except (OSError, pdfium.PdfiumError) as exc:
        raise PageUnavailable(f"{path}: cannot be opened ({exc})") from exc
    try:
        if not 1 <= page <= len(pdf):
            raise PageUnavailable(f"{path}: has no page {page} (it has {len(pdf)})")
        image = pdf[page - 1].render(scale=scale).to_pil().convert("RGBA")
    finally:
        pdf.close()
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for number, (x0, top, x1, bottom) in boxes:
        if number != page:
            continue
        rect = [(x0 - PAD_POINTS) * scale, (top - PAD_POINTS) * scale,
                (x1 + PAD_POINTS) * scale, (bottom + PAD_POINTS) * scale]
        draw.rectangle(rect, fill=HIGHLIGHT_FILL, outline=HIGHLIGHT_OUTLINE, width=2)
    out = BytesIO()
    Image.alpha_composite(image, overlay).convert("RGB").save(out, format="PNG", optimize=True)
    return out.getvalue()


__all__ = ["render_page", "PageUnavailable", "DEFAULT_SCALE"]
