"""Make real test documents on disk (PDF, DOCX, HTML, text in any encoding).

Shared by the loader, splitter, ingestion, UI and reliability tests. Everything works offline:

* PDFs are written with reportlab. Chinese uses reportlab's built-in CID font ``STSong-Light``
  (Adobe-GB1; the font itself is not embedded, but pypdf extracts the text through its ToUnicode
  map, which is all the loaders need). Checked with pypdf 7: the text comes back exactly.
* DOCX files are written with python-docx, HTML and text files by hand.

Usage::

    from tests.docmaker import make_chinese_pdf, make_docx, make_html, write_text
    make_chinese_pdf(tmp_path / "a.pdf", ["第一页的内容。", "第二页的内容。"])
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

__all__ = [
    "CHINESE_FONT",
    "make_blank_pdf",
    "make_chinese_pdf",
    "make_docx",
    "make_encrypted_pdf",
    "make_html",
    "make_truncated_pdf",
    "pdf_bytes",
    "write_text",
]

CHINESE_FONT = "STSong-Light"


def _register_font() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    try:
        pdfmetrics.getFont(CHINESE_FONT)
    except KeyError:
        pdfmetrics.registerFont(UnicodeCIDFont(CHINESE_FONT))


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters; explicit newlines are kept."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if not paragraph:
            lines.append("")
        while paragraph:
            lines.append(paragraph[:width])
            paragraph = paragraph[width:]
    return lines


def pdf_bytes(
    pages: Sequence[str],
    title: str | None = None,
    line_chars: int = 30,
    font_size: int = 12,
) -> bytes:
    """A PDF with one page per string; Chinese and Latin text both work.

    Lines are wrapped every ``line_chars`` characters (a page that does not fit simply runs off
    the bottom; keep test pages short). An empty string makes a page with no text at all.
    """
    from reportlab.pdfgen import canvas

    _register_font()
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    if title is not None:
        c.setTitle(title)
    for text in pages:
        c.setFont(CHINESE_FONT, font_size)
        y = 800
        for line in _wrap(text, line_chars):
            if line:
                c.drawString(50, y, line)
            y -= font_size * 1.6
        c.showPage()
    c.save()
    return buf.getvalue()


def make_chinese_pdf(
    path: str | Path,
    pages: Sequence[str],
    title: str | None = None,
    line_chars: int = 30,
) -> Path:
    """Write a (multi-page) PDF whose page ``i`` shows ``pages[i]``; returns the path."""
    path = Path(path)
    path.write_bytes(pdf_bytes(pages, title=title, line_chars=line_chars))
    return path


def make_blank_pdf(path: str | Path, pages: int = 1) -> Path:
    """A PDF whose pages hold only a drawn rectangle and no text (like a scan without OCR)."""
    from reportlab.pdfgen import canvas

    path = Path(path)
    c = canvas.Canvas(str(path))
    for _ in range(pages):
        c.rect(100, 100, 300, 400, fill=1)
        c.showPage()
    c.save()
    return path


def make_encrypted_pdf(
    path: str | Path,
    pages: Sequence[str],
    user_password: str = "secret",
    owner_password: str | None = "owner",
) -> Path:
    """A PDF encrypted with RC4-128 (needs no extra package). ``user_password=""`` makes one that
    opens without a password (only the owner's rights are protected)."""
    from pypdf import PdfReader, PdfWriter

    path = Path(path)
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(pages))))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="RC4-128")
    with path.open("wb") as fh:
        writer.write(fh)
    return path


def make_truncated_pdf(path: str | Path, pages: Sequence[str] = ("截断的文件。",), keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of a valid PDF's bytes (a broken download)."""
    path = Path(path)
    data = pdf_bytes(pages)
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_docx(
    path: str | Path,
    heading: str | None = None,
    paragraphs: Sequence[str] = (),
    table: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    heading_level: int = 1,
    after_table: Sequence[str] = (),
) -> Path:
    """A DOCX: an optional heading, paragraphs, an optional table (rows of cells), then
    ``after_table`` paragraphs. ``title`` sets the core-properties title."""
    import docx

    path = Path(path)
    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    if heading is not None:
        document.add_heading(heading, level=heading_level)
    for text in paragraphs:
        document.add_paragraph(text)
    if table:
        cols = max(len(row) for row in table)
        t = document.add_table(rows=len(table), cols=cols)
        for r, row in enumerate(table):
            for c, cell in enumerate(row):
                t.cell(r, c).text = cell
    for text in after_table:
        document.add_paragraph(text)
    document.save(str(path))
    return path


def make_html(
    path: str | Path,
    body: str,
    title: str | None = None,
    head_extra: str = "",
    encoding: str = "utf-8",
    meta_charset: bool = True,
) -> Path:
    """An HTML page with ``body`` (markup) inside <body>; written in ``encoding``."""
    path = Path(path)
    meta = f'<meta charset="{encoding}">' if meta_charset else ""
    title_tag = f"<title>{title}</title>" if title is not None else ""
    page = (
        f"<!DOCTYPE html>\n<html><head>{meta}{title_tag}{head_extra}</head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )
    path.write_bytes(page.encode(encoding))
    return path


def write_text(path: str | Path, text: str, encoding: str = "utf-8", bom: bool = False) -> Path:
    """Write ``text`` in ``encoding``. ``bom=True`` prepends the byte-order mark (UTF-8/16/32);
    Python's ``utf-16``/``utf-32`` codecs always write one, ``utf-16-le``/``-be`` never do."""
    import codecs

    path = Path(path)
    data = text.encode(encoding)
    if bom:
        marks = {
            "utf-8": codecs.BOM_UTF8,
            "utf-16-le": codecs.BOM_UTF16_LE,
            "utf-16-be": codecs.BOM_UTF16_BE,
            "utf-32-le": codecs.BOM_UTF32_LE,
            "utf-32-be": codecs.BOM_UTF32_BE,
        }
        data = marks[encoding.lower().replace("_", "-")] + data
    path.write_bytes(data)
    return path
