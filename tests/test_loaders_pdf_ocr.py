"""The PDF loader on layout and scans: two-column pages in reading order through
``load_document``, and pages without a usable text layer read by OCR (``Page.ocr``), page by
page, with per-page problems in ``LoadedDocument.warnings``.

Scanned pages are made as a scanner would: a text page (reportlab, a CJK TrueType font from the
machine) rendered by pypdfium2 to an image at 200 dpi, and the images saved as an image-only PDF
by Pillow. The OCR tests use the real engine and are skipped without rapidocr or a CJK font.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from ingest import ocr
from ingest.errors import NoTextLayer
from ingest.loaders import load_document
from ingest.loaders.pdf import _text_problem
from tests.docmaker import pdf_bytes
from tests.test_ocr import _cjk_font, char_accuracy
from tests.test_pdf_layout import ROWS, RUNNING_HEAD, make_two_column_pdf

pdfium = pytest.importorskip("pypdfium2")

PAGE = (420.0, 320.0)  # points; small pages keep each recognition near a second
DPI = 200

SCAN_PAGES = [
    [
        "扫描件的第一页：光学字符识别",
        "扫描页面没有文字层，需要先识别文字再建立索引。",
        "繁體中文：機器學習與自然語言處理。",
        "English line: Offline OCR of 42 pages.",
    ],
    [
        "第二页：检索增强生成",
        "知识库中的段落会被切分并计算向量。",
        "回答问题时引用最相关的段落。",
        "Second page, mixed 中英文 text，2024年5月。",
    ],
]


# ---------------------------------------------------------------------------------------------
# Makers.


def _text_pdf(pages: list[list[str]], head: str | None = None, head_right: str | None = None) -> bytes:
    """Small pages of lines in a CJK TrueType font (embedded), with a real text layer; with
    ``head``, a running head at the top and the page number at the bottom of each page; with
    ``head_right`` (``{n}``: the page number), more of the head at the right end of its line."""
    from reportlab.pdfgen import canvas

    font = _cjk_font()
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=PAGE)
    for number, lines in enumerate(pages, start=1):
        if head is not None:
            c.setFont(font, 9)
            c.drawString(30, PAGE[1] - 18, head)
            if head_right is not None:
                c.drawRightString(PAGE[0] - 30, PAGE[1] - 18, head_right.format(n=number))
            c.drawCentredString(PAGE[0] / 2, 14, str(number))
        y = PAGE[1] - 46
        for k, line in enumerate(lines):
            c.setFont(font, 16 if k == 0 else 13)
            c.drawString(30, y, line)
            y -= 40 if k == 0 else 30
        c.showPage()
    c.save()
    return buf.getvalue()


def _scanned_pdf(pages: list[list[str]], head: str | None = None, head_right: str | None = None) -> bytes:
    """The same pages as images only: rendered at 200 dpi and saved as a PDF by Pillow."""
    doc = pdfium.PdfDocument(_text_pdf(pages, head, head_right))
    try:
        images = [doc[i].render(scale=DPI / 72.0).to_pil().convert("RGB") for i in range(len(doc))]
    finally:
        doc.close()
    buf = io.BytesIO()
    images[0].save(buf, "PDF", resolution=DPI, save_all=True, append_images=images[1:])
    return buf.getvalue()


def _joined(path: Path, parts: list[bytes]) -> Path:
    """One PDF of all pages of ``parts`` in turn."""
    out = pdfium.PdfDocument.new()
    for data in parts:
        src = pdfium.PdfDocument(data)
        out.import_pages(src)
        src.close()
    out.save(str(path))
    out.close()
    return path


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("rapidocr")
    pytest.importorskip("reportlab")
    ocr.reset_engine()
    return ocr.load_engine()


@pytest.fixture()
def no_ocr(monkeypatch):
    """OCR not available: recognition raises OcrUnavailable, as without rapidocr."""

    def unavailable(*args, **kwargs):
        raise ocr.OcrUnavailable("the OCR engine is not installed (test); pip install rapidocr")

    monkeypatch.setattr(ocr, "recognize_image", unavailable)


# ---------------------------------------------------------------------------------------------
# Reading order through the loader.


def test_two_column_pdf_reads_in_order_through_load_document(tmp_path):
    """The content stream interleaves the columns row by row (pypdf, the old loader, read them
    so); the loader reads the left column wholly before the right one, the title and abstract
    first, and leaves the running head and page numbers out."""
    doc = load_document(make_two_column_pdf(tmp_path / "two.pdf", pages=3))
    assert [p.number for p in doc.pages] == [1, 2, 3]
    for page in doc.pages:
        n = page.number
        assert not page.ocr and page.layout is not None
        text = re.sub(r"\s+", "", page.text)  # Chinese lines of page 2 may be joined
        markers = [f"L{n}.{r:02d}" for r in range(ROWS)] + [f"R{n}.{r:02d}" for r in range(ROWS)]
        where = [text.find(m) for m in markers]
        assert all(w >= 0 for w in where), (n, page.text[:300])
        assert where == sorted(where), (n, page.text[:300])
        assert RUNNING_HEAD not in page.text
        assert str(n) not in page.text.split("\n")  # the page number is not a line of the body
    first = doc.pages[0].text
    assert first.startswith("Layout-Aware Reading of Two-Column Pages\nAbstract:")


def test_text_problem_tells_usable_from_garbled_layers():
    assert _text_problem("第一章 总则\n正文。") is None
    assert _text_problem("Plain English.") is None
    assert _text_problem("  \n ") == "empty"
    assert _text_problem("\ue000\ue001\ue002\ufffd\ufffd ab") == "garbled"
    assert _text_problem("12 345 678 (9) — 2024") == "no letters"
    assert _text_problem("Прочие буквы") is None  # letters of any script count


# ---------------------------------------------------------------------------------------------
# Scanned pages.


@pytest.mark.slow
def test_scanned_pdf_is_read_by_ocr(engine, tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(_scanned_pdf(SCAN_PAGES))
    assert all(not layout_text.strip() for layout_text in _layer_texts(path))  # images only
    doc = load_document(path)
    assert [p.number for p in doc.pages] == [1, 2]
    assert all(p.ocr for p in doc.pages)
    # the recognised lines are the page's layout (for highlighting citations): the same text
    assert all("".join(p.layout.text.split()) == "".join(p.text.split()) for p in doc.pages)
    assert doc.warnings == []
    for page, lines in zip(doc.pages, SCAN_PAGES):
        accuracy = char_accuracy(page.text, "\n".join(lines))
        print(f"OCR character accuracy, page {page.number}: {accuracy:.4f}")
        assert accuracy >= 0.95, page.text
    assert "機器學習" in doc.pages[0].text and "Offline OCR" in doc.pages[0].text
    assert "检索增强生成" in doc.pages[1].text


@pytest.mark.slow
def test_running_heads_and_page_numbers_of_scanned_pages_are_left_out(engine, tmp_path):
    head = "Scanned Notes on OCR"
    path = tmp_path / "book.pdf"
    path.write_bytes(_scanned_pdf([*SCAN_PAGES, SCAN_PAGES[0]], head=head))
    doc = load_document(path)
    assert all(p.ocr for p in doc.pages)
    for page, lines in zip(doc.pages, [*SCAN_PAGES, SCAN_PAGES[0]]):
        assert head not in page.text and "Scanned Notes" not in page.text, page.text
        assert page.text.split("\n")[-1] != str(page.number), page.text
        assert char_accuracy(page.text, "\n".join(lines)) >= 0.95, page.text


def test_a_running_head_split_by_its_gap_is_left_out_whole(engine, tmp_path):
    """A head with a title at the left and the page number at the right of one line: OCR reads
    two lines side by side, and both are running head."""
    path = tmp_path / "journal.pdf"
    path.write_bytes(_scanned_pdf([*SCAN_PAGES, SCAN_PAGES[0]], head="Scanned Notes on OCR",
                                  head_right="第 {n} 页"))
    doc = load_document(path)
    for page in doc.pages:
        assert "Scanned Notes" not in page.text and not re.search(r"第\s*\d+\s*页", page.text), page.text


def _layer_texts(path: Path) -> list[str]:
    doc = pdfium.PdfDocument(str(path))
    try:
        return [doc[i].get_textpage().get_text_range() for i in range(len(doc))]
    finally:
        doc.close()


@pytest.mark.slow
def test_mixed_pdf_text_page_read_and_scanned_page_ocrd(engine, tmp_path):
    path = _joined(tmp_path / "mixed.pdf", [pdf_bytes(["第一页有文字层。"]), _scanned_pdf(SCAN_PAGES[1:])])
    doc = load_document(path)
    assert [(p.number, p.ocr) for p in doc.pages] == [(1, False), (2, True)]
    assert doc.pages[0].text == "第一页有文字层。" and doc.pages[0].layout is not None
    assert char_accuracy(doc.pages[1].text, "\n".join(SCAN_PAGES[1])) >= 0.95, doc.pages[1].text
    assert doc.warnings == []


def test_ocr_unavailable_text_pages_load_and_scanned_page_is_reported(tmp_path, no_ocr):
    pytest.importorskip("reportlab")
    path = _joined(
        tmp_path / "mixed.pdf",
        [pdf_bytes(["第一页有文字层。"]), _scanned_pdf(SCAN_PAGES[1:]), pdf_bytes(["第三页也有。"])],
    )
    doc = load_document(path)
    assert [(p.number, p.text, p.ocr) for p in doc.pages] == [
        (1, "第一页有文字层。", False), (2, "", False), (3, "第三页也有。", False)]
    (warning,) = doc.warnings
    assert "page 2 " in warning and "OCR is not available" in warning and "pip install" in warning


def test_ocr_unavailable_and_no_text_at_all_is_a_clear_error(tmp_path, no_ocr):
    pytest.importorskip("reportlab")
    path = tmp_path / "all-scanned.pdf"
    path.write_bytes(_scanned_pdf(SCAN_PAGES))
    with pytest.raises(NoTextLayer) as info:
        load_document(path)
    assert str(info.value).startswith(str(path))
    assert "OCR is not available" in info.value.reason and "scan" in info.value.reason


@pytest.mark.slow
def test_a_page_whose_ocr_fails_is_reported_and_the_rest_read(engine, tmp_path, monkeypatch):
    path = tmp_path / "scan.pdf"
    path.write_bytes(_scanned_pdf(SCAN_PAGES))
    real = ocr.recognize_image
    calls = []

    def flaky(image, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("onnxruntime: out of memory (test)")
        return real(image, **kwargs)

    monkeypatch.setattr(ocr, "recognize_image", flaky)
    doc = load_document(path)
    assert [(p.number, p.ocr, bool(p.text)) for p in doc.pages] == [(1, False, False), (2, True, True)]
    (warning,) = doc.warnings
    assert warning.startswith("page 1: OCR failed") and "out of memory" in warning
    assert "检索增强生成" in doc.pages[1].text


# A ToUnicode map that sends every printable ASCII code to the private-use area, as broken
# producers' maps do.
_PUA_CMAP = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<00> <FF>
endcodespacerange
1 beginbfrange
<20> <7E> <E000>
endbfrange
endcmap
CMapName currentdict /CMapResource defineresource pop
end
end
"""


@pytest.mark.slow
def test_garbled_text_layer_is_replaced_by_ocr(engine, tmp_path):
    """A scan with an invisible text layer whose font maps to private-use characters: the
    garbage is not indexed, the page is OCR'd."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject, StreamObject
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    scan = pdfium.PdfDocument(_text_pdf(SCAN_PAGES[:1]))
    image = scan[0].render(scale=DPI / 72.0).to_pil().convert("RGB")
    scan.close()
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=PAGE)
    c.drawImage(ImageReader(image), 0, 0, width=PAGE[0], height=PAGE[1])
    text = c.beginText(30, PAGE[1] - 46)
    text.setTextRenderMode(3)  # invisible, as OCR layers are
    text.setFont("Helvetica", 13)
    for line in ("Scanned page one", "no text layer here", "Traditional Chinese", "English line"):
        text.textLine(line)
    c.drawText(text)
    c.showPage()
    c.save()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(buf.getvalue())))
    cmap = StreamObject()
    cmap.set_data(_PUA_CMAP)
    for font in writer.pages[0]["/Resources"]["/Font"].values():
        font.get_object()[NameObject("/ToUnicode")] = writer._add_object(cmap)
    path = tmp_path / "garbled.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    assert _text_problem(_layer_texts(path)[0]) == "garbled"  # the sample really is garbled
    (page,) = load_document(path).pages
    assert page.ocr and not re.search("[\ue000-\uf8ff]", page.text)
    assert char_accuracy(page.text, "\n".join(SCAN_PAGES[0])) >= 0.95, page.text


@pytest.mark.slow
def test_blank_and_numbers_only_pages(engine, tmp_path):
    """A blank page is not OCR'd and stays empty; a page of figures only keeps its text layer
    (OCR finds no letters either); neither is reported."""
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=PAGE)
    c.setFont("Helvetica", 13)
    c.drawString(30, 200, "2023 1 234 567 2024 1 456 789")
    c.drawString(30, 170, "12.5% 13.1% 14.0%")
    c.showPage()
    c.showPage()  # blank
    c.save()
    path = _joined(tmp_path / "numbers.pdf", [pdf_bytes(["正文页。"]), buf.getvalue()])
    doc = load_document(path)
    assert [(p.number, p.ocr) for p in doc.pages] == [(1, False), (2, False), (3, False)]
    assert doc.pages[1].text == "2023 1 234 567 2024 1 456 789\n12.5% 13.1% 14.0%"
    assert doc.pages[2].text == "" and doc.warnings == []


@pytest.mark.slow
def test_page_with_only_a_drawing_is_refused_with_the_reason(engine, tmp_path):
    from tests.docmaker import make_blank_pdf

    with pytest.raises(NoTextLayer) as info:
        load_document(make_blank_pdf(tmp_path / "drawing.pdf", pages=1))
    assert "OCR found no text" in info.value.reason
