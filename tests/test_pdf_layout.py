"""ingest.loaders.pdf_layout: reading order on two-column pages, running heads and page numbers
set aside, line boxes, and the span -> boxes map used for highlighting.

The PDFs are made here: with reportlab (Latin in Helvetica, Chinese in the CID font STSong-Light,
whose text layer PDFium reads through its ToUnicode map) and, when LibreOffice is installed, by
LibreOffice itself from a flat ODT with a two-column section, a header and a page-number footer
(skipped without ``soffice``). ``bench/pdf_layout.py`` uses the same makers.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from ingest.loaders.document import CJK
from ingest.loaders.pdf_layout import Box, PageLayout, read_layout

pypdfium2 = pytest.importorskip("pypdfium2")

A4 = (595.28, 841.89)
RUNNING_HEAD = "Alpaca Notes on PDF Layout"
TITLE = "Layout-Aware Reading of Two-Column Pages"
ABSTRACT = (
    "Abstract: a title and an abstract span both columns and come first; then the left column,",
    "then the right one, while running heads and page numbers are set aside.",
)
EN_WORDS = (  # noqa: SIM905
    "retrieval augmented generation reads passages from the knowledge base and cites them so the "
    "reading order of every page matters for each chunk that is cut from it while running heads "
    "and page numbers are noise for search"
).split()
ZH_TEXT = (
    "检索增强生成从知识库中读取段落并加以引用因此双栏页面的阅读顺序对切分出的每个片段都很重要"
    "页眉和页码对检索来说只是噪声应当放在一边"
)
ROWS = 30
COLUMN_X = (56.0, 310.0)  # left edges of the two columns; each 229 pt wide, a 25 pt gutter
COLUMN_WIDTH = 229.0


def _register_cid_font() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    try:
        pdfmetrics.getFont("STSong-Light")
    except KeyError:
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


def _fit(words: list[str], font: str, size: float, width: float, sep: str = " ") -> str:
    from reportlab.pdfbase.pdfmetrics import stringWidth

    out = ""
    for word in words:
        candidate = f"{out}{sep}{word}" if out else word
        if stringWidth(candidate, font, size) > width:
            break
        out = candidate
    return out


def column_line(page: int, side: str, row: int) -> tuple[str, str]:
    """(font, text) of row ``row`` of column ``side`` ("L"/"R") on 1-based page ``page``: a
    marker such as ``L2.07`` then English words (pages 1 and 3) or Chinese (page 2)."""
    marker = f"{side}{page}.{row:02d}"
    if page == 2:
        start = (row * 7 + (side == "R") * 3) % 40
        return "STSong-Light", marker + " " + ZH_TEXT[start : start + 19]
    rotated = EN_WORDS[(row * 5 + (side == "R") * 11) % len(EN_WORDS):] + EN_WORDS
    return "Helvetica", _fit([marker, *rotated], "Helvetica", 9, COLUMN_WIDTH)


def make_two_column_pdf(path: str | Path, pages: int = 3) -> Path:
    """A4 pages with a running head (top) and a page number (bottom), two columns of ROWS lines
    each, and on page 1 a title and an abstract spanning both columns. The content stream is
    written in a hostile order, as some producers do: row by row across both columns (right
    line first), the running head and page number last; so pypdf, which follows the stream,
    interleaves the columns."""
    from reportlab.pdfgen import canvas

    _register_cid_font()
    path = Path(path)
    c = canvas.Canvas(str(path), pagesize=A4)
    for page in range(1, pages + 1):
        y0 = 770.0
        if page == 1:
            c.setFont("Helvetica-Bold", 16)
            c.drawCentredString(A4[0] / 2, 770, TITLE)
            c.setFont("Helvetica", 10)
            c.drawString(56, 745, ABSTRACT[0])
            c.drawString(56, 732, ABSTRACT[1])
            y0 = 705.0
        for row in range(ROWS):
            y = y0 - row * 13.0
            for side, x in (("R", COLUMN_X[1]), ("L", COLUMN_X[0])):
                font, text = column_line(page, side, row)
                c.setFont(font, 9)
                c.drawString(x, y, text)
        c.setFont("Helvetica", 9)
        c.drawString(56, 810, RUNNING_HEAD)
        c.drawCentredString(A4[0] / 2, 30, str(page))
        c.showPage()
    c.save()
    return path


LO_PARAGRAPHS = 40


def lo_paragraph(n: int) -> str:
    """Paragraph ``n`` (1-based) of the LibreOffice sample: a marker ``P07`` then English text,
    or Chinese text for every third paragraph."""
    if n % 3 == 0:
        start = (n * 11) % 40
        return f"P{n:02d} " + (ZH_TEXT[start:] + ZH_TEXT[:start]) * 2
    words = EN_WORDS[(n * 7) % len(EN_WORDS):] + EN_WORDS + EN_WORDS[: (n * 3) % 17]
    return f"P{n:02d} " + " ".join(words) + "."


LO_HEADER = "Alpaca Journal of Document QA, Vol. 3 · 羊驼文档问答"
LO_TITLE = "Reading Order on Two-Column Pages: A Title That Spans Both Columns"


def make_libreoffice_pdf(directory: str | Path) -> Path | None:
    """A real editor's two-column PDF: a flat ODT (a centred title, then a section of two
    columns holding LO_PARAGRAPHS paragraphs; a header on every page, the page number in the
    footer) converted by LibreOffice. None when ``soffice`` is not installed or fails."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        return None
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paras = "".join(
        f'<text:p text:style-name="Body">{escape(lo_paragraph(n))}</text:p>'
        for n in range(1, LO_PARAGRAPHS + 1)
    )
    fodt = f"""<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"
 office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.text">
 <office:styles>
  <style:default-style style:family="paragraph">
   <style:text-properties fo:font-size="10pt" fo:language="en" fo:country="US"
     style:font-size-asian="10pt" style:language-asian="zh" style:country-asian="CN"/>
  </style:default-style>
  <style:style style:name="Standard" style:family="paragraph"/>
  <style:style style:name="Body" style:family="paragraph">
   <style:paragraph-properties fo:text-align="justify" fo:margin-bottom="0.15cm"/>
  </style:style>
  <style:style style:name="Title" style:family="paragraph">
   <style:paragraph-properties fo:text-align="center" fo:margin-bottom="0.4cm"/>
   <style:text-properties fo:font-size="16pt" style:font-size-asian="16pt" fo:font-weight="bold"/>
  </style:style>
  <style:style style:name="Footer" style:family="paragraph">
   <style:paragraph-properties fo:text-align="center"/>
  </style:style>
 </office:styles>
 <office:automatic-styles>
  <style:style style:name="Sect2" style:family="section">
   <style:section-properties><style:columns fo:column-count="2" fo:column-gap="0.8cm"/></style:section-properties>
  </style:style>
  <style:page-layout style:name="pm1">
   <style:page-layout-properties fo:page-width="21cm" fo:page-height="29.7cm" fo:margin-top="1.2cm"
     fo:margin-bottom="1.2cm" fo:margin-left="2cm" fo:margin-right="2cm"/>
   <style:header-style><style:header-footer-properties fo:min-height="0cm" fo:margin-bottom="0.6cm"/></style:header-style>
   <style:footer-style><style:header-footer-properties fo:min-height="0cm" fo:margin-top="0.6cm"/></style:footer-style>
  </style:page-layout>
 </office:automatic-styles>
 <office:master-styles>
  <style:master-page style:name="Standard" style:page-layout-name="pm1">
   <style:header><text:p text:style-name="Standard">{escape(LO_HEADER)}</text:p></style:header>
   <style:footer><text:p text:style-name="Footer"><text:page-number text:select-page="current">1</text:page-number></text:p></style:footer>
  </style:master-page>
 </office:master-styles>
 <office:body><office:text>
  <text:p text:style-name="Title">{escape(LO_TITLE)}</text:p>
  <text:section text:style-name="Sect2" text:name="Columns">{paras}</text:section>
 </office:text></office:body>
</office:document>
"""
    source = directory / "twocol.fodt"
    source.write_text(fodt, encoding="utf-8")
    profile = (directory / "lo-profile").resolve()
    try:
        subprocess.run(
            [soffice, f"-env:UserInstallation=file://{profile}", "--headless",
             "--convert-to", "pdf", "--outdir", str(directory), str(source)],
            check=True, capture_output=True, timeout=180,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    pdf = directory / "twocol.pdf"
    return pdf if pdf.exists() else None


# ---------------------------------------------------------------------------------------------
# Helpers

_CJK_SPACE_CJK = re.compile(rf"[{CJK}] [{CJK}]")


def _index(text: str, needle: str) -> int:
    i = text.find(needle)
    assert i >= 0, f"{needle!r} not in the text"
    return i


def _inside(box: Box, page: PageLayout) -> bool:
    return 0 <= box.x0 < box.x1 <= page.width + 0.01 and 0 <= box.top < box.bottom <= page.height + 0.01


@pytest.fixture(scope="module")
def two_column(tmp_path_factory) -> tuple[Path, list[PageLayout]]:
    path = make_two_column_pdf(tmp_path_factory.mktemp("layout") / "two.pdf")
    return path, read_layout(path)


@pytest.fixture(scope="module")
def libreoffice(tmp_path_factory) -> tuple[Path, list[PageLayout]]:
    pdf = make_libreoffice_pdf(tmp_path_factory.mktemp("lo"))
    if pdf is None:
        pytest.skip("LibreOffice (soffice) is not installed or could not convert")
    return pdf, read_layout(pdf)


# ---------------------------------------------------------------------------------------------
# Two columns (reportlab, hostile content order)


def test_pypdf_interleaves_the_columns_of_the_sample(two_column):
    """The sample is a real test: pypdf (today's loader) reads right and left lines in turn."""
    from pypdf import PdfReader

    path, _ = two_column
    text = PdfReader(str(path)).pages[0].extract_text()
    assert _index(text, "R1.00") < _index(text, "L1.01"), "pypdf no longer interleaves: sample too easy"


@pytest.mark.parametrize("page_no", [1, 2, 3])
def test_left_column_wholly_before_right_column(two_column, page_no):
    _, pages = two_column
    page = pages[page_no - 1]
    text = page.text
    assert page.columns == 2
    left = [_index(text, f"L{page_no}.{row:02d}") for row in range(ROWS)]
    right = [_index(text, f"R{page_no}.{row:02d}") for row in range(ROWS)]
    assert left == sorted(left) and right == sorted(right), "each column top to bottom"
    assert max(left) < min(right), "the whole left column before the right one"


def test_title_and_abstract_spanning_both_columns_come_first(two_column):
    _, pages = two_column
    lines = [line.text for line in pages[0].lines]
    assert lines[0] == TITLE
    assert lines[1:3] == list(ABSTRACT)
    assert lines[3].startswith("L1.00")


def test_running_head_and_page_numbers_set_aside(two_column):
    _, pages = two_column
    assert len(pages) == 3
    for number, page in enumerate(pages, start=1):
        assert [line.text for line in page.header_footer_lines] == [RUNNING_HEAD, str(number)]
        assert RUNNING_HEAD not in page.text
        assert all(line.text != str(number) for line in page.lines)
        assert all(line.page_index == number - 1 for line in page.lines + page.header_footer_lines)


def test_chinese_cid_text_without_spaces_and_latin_words_spaced(two_column):
    _, pages = two_column
    zh = pages[1]
    for row in (0, 7, 29):
        for side in "LR":
            _, expected = column_line(2, side, row)
            assert expected in zh.text.split("\n")
    assert not _CJK_SPACE_CJK.search(zh.text)
    _, expected = column_line(1, "L", 3)
    assert expected in pages[0].text.split("\n")


def test_boxes_inside_page_and_top_to_bottom_within_a_column(two_column):
    _, pages = two_column
    for page in pages:
        assert (round(page.width), round(page.height)) == (595, 842)
        for line in page.lines + page.header_footer_lines:
            assert _inside(line.box, page)
            assert len(line.char_boxes) == len(line.text)
        for side, x in (("L", COLUMN_X[0]), ("R", COLUMN_X[1])):
            column = [line for line in page.lines if re.match(rf"{side}\d\.\d\d ", line.text)]
            assert len(column) == ROWS
            assert all(abs(line.box.x0 - x) < 1.5 for line in column)
            tops = [line.box.top for line in column]
            assert tops == sorted(tops) and len(set(tops)) == ROWS
    # PDF y = 705 (first row's baseline) is 842 - 705 = 137 pt from the top: origin top-left.
    first = pages[0].lines[3]
    assert first.box.top < 137 < first.box.bottom


def test_boxes_for_whole_line_part_of_a_line_and_two_lines(two_column):
    _, pages = two_column
    page = pages[0]
    target = next(line for line in page.lines if line.text.startswith("L1.05"))
    span = page.find(target.text)
    assert span is not None and page.text[span[0] : span[1]] == target.text
    assert page.boxes_for(*span) == [target.box]

    # Part of a line: each word's box is where reportlab put it (x from the advance widths).
    from reportlab.pdfbase.pdfmetrics import stringWidth

    start = span[0]
    for k, word in enumerate(target.text.split(" ")):
        before = " ".join(target.text.split(" ")[:k]) + (" " if k else "")
        (part,) = page.boxes_for(start + len(before), start + len(before) + len(word))
        assert abs(part.x0 - (COLUMN_X[0] + stringWidth(before, "Helvetica", 9))) < 0.05, word
        assert abs(part.width - stringWidth(word, "Helvetica", 9)) < 0.05, word
        assert abs(part.top - target.box.top) < 0.01 and abs(part.bottom - target.box.bottom) < 0.01

    following = next(line for line in page.lines if line.text.startswith("L1.06"))
    across = page.boxes_for(span[1] - 3, span[1] + 1 + 5)  # end of L1.05, start of L1.06
    assert len(across) == 2
    assert across[0].top == target.box.top and across[1].top == following.box.top
    # Last line of the left column, then the first of the right one: two places on the page.
    last_left = page.find(next(l.text for l in page.lines if l.text.startswith(f"L1.{ROWS - 1}")))
    boxes = page.boxes_for(last_left[1] - 2, last_left[1] + 4)
    assert len(boxes) == 2 and boxes[0].x0 < COLUMN_X[1] <= boxes[1].x0
    assert page.boxes_for(0, 0) == [] and page.boxes_for(len(page.text), len(page.text) + 5) == []


def test_find_ignores_whitespace(two_column):
    _, pages = two_column
    page = pages[0]
    span = page.find("  ".join(" ".join(ABSTRACT).split()))
    assert span is not None
    assert page.text[span[0] : span[1]] == "\n".join(ABSTRACT)
    assert len(page.boxes_for(*span)) == 2
    assert page.find("not on this page") is None and page.find("  ") is None


# ---------------------------------------------------------------------------------------------
# LibreOffice: a real two-column PDF


def test_libreoffice_paragraphs_in_document_order(libreoffice):
    _, pages = libreoffice
    assert len(pages) >= 3
    text = "\n".join(page.text for page in pages)
    markers = [int(m) for m in re.findall(r"\bP(\d\d)\b", text)]
    assert markers == list(range(1, LO_PARAGRAPHS + 1))
    assert pages[0].lines[0].text.startswith("Reading Order on Two-Column Pages")


def test_libreoffice_left_column_before_right_column(libreoffice):
    _, pages = libreoffice
    for page in pages:
        assert page.columns == 2
        mid = page.width / 2
        body = [line for line in page.lines if line.box.x1 <= mid or line.box.x0 >= mid]
        sides = ["L" if line.box.x1 <= mid else "R" for line in body]
        assert "L" in sides and "R" in sides
        assert "".join(sides) == "L" * sides.count("L") + "R" * sides.count("R")
        for side in "LR":
            tops = [line.box.top for line, s in zip(body, sides) if s == side]
            assert tops == sorted(tops)


def test_libreoffice_header_and_page_numbers_set_aside(libreoffice):
    _, pages = libreoffice
    for number, page in enumerate(pages, start=1):
        assert [line.text for line in page.header_footer_lines] == [LO_HEADER, str(number)]
        assert "Alpaca Journal" not in page.text
        for line in page.lines + page.header_footer_lines:
            assert _inside(line.box, page)


def test_libreoffice_words_and_chinese_come_out_whole(libreoffice):
    _, pages = libreoffice
    text = "\n".join(page.text for page in pages)
    vocabulary = {w.lower() for w in EN_WORDS} | {"p"}
    latin = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
    assert latin <= vocabulary | {w.lower() for w in re.findall(r"[A-Za-z]+", LO_TITLE)}
    assert not _CJK_SPACE_CJK.search(text)
    assert "检索增强生成从知识库中读取段落" in text.replace("\n", "")


# ---------------------------------------------------------------------------------------------
# Other layouts and robustness


def _canvas_pdf(draw, pagesize=A4) -> bytes:
    from reportlab.pdfgen import canvas

    _register_cid_font()
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=pagesize)
    draw(c)
    c.save()
    return buf.getvalue()


def test_three_columns_read_left_to_right():
    def draw(c):
        c.setFont("Helvetica", 9)
        for row in range(25):
            for k, x in enumerate((50, 230, 410)):
                words = [f"C{k}.{row:02d}", *EN_WORDS[row : row + 6]]
                c.drawString(x, 780 - 13 * row, _fit(words, "Helvetica", 9, 160))
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    order = [line.text[:5] for line in page.lines]
    assert order == [f"C{k}.{row:02d}" for k in range(3) for row in range(25)]
    assert page.columns == 3


def test_single_column_page_reads_top_to_bottom():
    def draw(c):
        c.setFont("Helvetica", 10)
        for row in range(30):
            width = 60 if row % 4 == 3 else 80  # paragraph ends are short lines
            c.drawString(56, 780 - 14 * row, f"S{row:02d} " + ("x" * width))
        c.drawString(56, 360, "Name")
        c.drawString(300, 360, "Value")
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert page.columns == 1
    assert [line.text[:3] for line in page.lines[:30]] == [f"S{row:02d}" for row in range(30)]
    assert page.lines[30].text == "Name Value"


def test_empty_and_graphics_only_pages_have_no_lines():
    def draw(c):
        c.showPage()  # nothing at all
        c.rect(100, 100, 300, 400, fill=1)  # a scan without OCR: no text layer
        c.showPage()
        c.setFont("Helvetica", 12)
        c.drawString(72, 400, "Only line.")
        c.showPage()

    pages = read_layout(_canvas_pdf(draw))
    assert [len(p.lines) for p in pages] == [0, 0, 1]
    assert pages[0].text == "" and pages[0].boxes_for(0, 10) == [] and pages[0].find("x") is None
    assert pages[2].text == "Only line."


def test_rotated_pages_are_read_as_displayed():
    from pypdf import PdfReader, PdfWriter

    def draw(c):
        for _ in range(4):
            c.setFont("Helvetica", 12)
            c.drawString(72, 700, "Turned page text.")
            c.drawString(72, 680, "Second line here.")
            c.showPage()

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_canvas_pdf(draw, pagesize=(600, 800)))))
    for page, angle in zip(writer.pages[1:], (90, 180, 270)):
        page.rotate(angle)
    buf = io.BytesIO()
    writer.write(buf)
    pages = read_layout(buf.getvalue())
    for page, angle in zip(pages, (0, 90, 180, 270)):
        assert page.rotation == angle
        assert [line.text for line in page.lines] == ["Turned page text.", "Second line here."]
        assert (page.width, page.height) == ((600, 800) if angle in (0, 180) else (800, 600))
        first = page.lines[0].box
        assert _inside(first, page)
        if angle in (90, 270):
            assert first.height > first.width  # the text runs down or up the displayed page
    # /Rotate 90 turns the page clockwise: PDF (72, 700) shows at x = 700, y = 72.
    box = pages[1].lines[0].box
    assert box.x0 < 700 < box.x1 and abs(box.top - 72) < 1


def test_sideways_text_on_an_upright_page_is_read():
    def draw(c):
        c.setFont("Helvetica", 10)
        for row in range(5):
            c.drawString(72, 700 - 14 * row, f"Body line {row}.")
        c.saveState()
        c.translate(30, 300)
        c.rotate(90)
        c.drawString(0, 0, "arXiv:2401.00001v1 [cs.CL] 1 Jan 2024")
        c.restoreState()
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert [line.text for line in page.lines] == [f"Body line {row}." for row in range(5)] + [
        "arXiv:2401.00001v1 [cs.CL] 1 Jan 2024"
    ]
    stamp = page.lines[-1].box
    assert stamp.height > 5 * stamp.width and _inside(stamp, page)


def test_a_bare_page_number_is_set_aside_on_a_single_page():
    def draw(c):
        c.setFont("Helvetica", 10)
        c.drawString(72, 700, "The only body line.")
        c.drawCentredString(A4[0] / 2, 30, "- 7 -")
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert page.text == "The only body line."
    assert [line.text for line in page.header_footer_lines] == ["- 7 -"]


def test_a_body_line_near_the_bottom_is_kept():
    def draw(c):
        c.setFont("Helvetica", 10)
        for row in range(50):
            c.drawString(72, 780 - 14 * row, f"Line {row} of a full page.")
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert len(page.lines) == 50 and page.header_footer_lines == []


def test_encrypted_pdf_raises_pypdfium2_error_and_opens_with_password():
    from pypdf import PdfReader, PdfWriter

    def draw(c):
        c.setFont("Helvetica", 12)
        c.drawString(72, 700, "Secret text.")
        c.showPage()

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_canvas_pdf(draw))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(pypdfium2.PdfiumError):
        read_layout(buf.getvalue())
    assert read_layout(buf.getvalue(), password="secret")[0].text == "Secret text."


def test_damaged_or_not_a_pdf_raises_pypdfium2_error(tmp_path):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"this is not a pdf at all")
    with pytest.raises(pypdfium2.PdfiumError):
        read_layout(bad)


def test_running_heads_that_change_by_chapter_are_set_aside():
    """Running heads naming each chapter (texinfo, books) recur by place, not by text; the first
    body line, at the same place on every page, stays."""
    chapters = ["Introduction", "Introduction", "Methods and Data", "Methods and Data",
                "Results", "Discussion of Limits"]

    def draw(c):
        for number, chapter in enumerate(chapters, start=1):
            c.setFont("Helvetica-Oblique", 9)
            c.drawString(56, 810, chapter)
            c.drawRightString(539, 810, str(number))
            c.setFont("Helvetica", 10)
            for row in range(45):
                words = EN_WORDS[(row + number * 3) % 20 :][:8]
                c.drawString(56, 770 - 15 * row, f"B{number}.{row:02d} " + " ".join(words))
            c.showPage()

    pages = read_layout(_canvas_pdf(draw))
    for number, (page, chapter) in enumerate(zip(pages, chapters), start=1):
        assert [line.text for line in page.header_footer_lines] == [f"{chapter} {number}"]
        assert page.lines[0].text.startswith(f"B{number}.00 ") and len(page.lines) == 45


def test_slide_titles_at_the_same_place_stay_in_the_body():
    """A deck's slides put a (large) title at the same place on every page, set off by a gap:
    titles, not running heads. The slide number at the bottom is set aside."""
    titles = ["Why local document QA", "How retrieval works", "Reading two columns", "Next steps"]

    def draw(c):
        for number, title in enumerate(titles, start=1):
            c.setFont("Helvetica-Bold", 28)
            c.drawString(40, 540, title)
            c.setFont("Helvetica", 18)
            for row in range(6):
                c.drawString(60, 460 - 40 * row, f"- point {row + 1} of slide {number}")
            c.setFont("Helvetica", 10)
            c.drawRightString(820, 20, str(number))
            c.showPage()

    pages = read_layout(_canvas_pdf(draw, pagesize=(842, 595)))
    for number, (page, title) in enumerate(zip(pages, titles), start=1):
        assert page.lines[0].text == title
        assert [line.text for line in page.header_footer_lines] == [str(number)]


def test_superscript_stays_in_its_line():
    def draw(c):
        c.setFont("Helvetica", 12)
        c.drawString(72, 700, "E = mc")
        c.setFont("Helvetica", 7)
        c.drawString(72 + c.stringWidth("E = mc", "Helvetica", 12), 705, "2")
        c.setFont("Helvetica", 12)
        c.drawString(120, 700, " is famous.")
        c.drawString(72, 684, "Next line.")
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert [line.text for line in page.lines] == ["E = mc2 is famous.", "Next line."]


def test_spacing_rules_cjk_latin_and_letter_spacing():
    from reportlab.pdfbase.pdfmetrics import stringWidth

    def draw(c):
        c.setFont("STSong-Light", 12)
        c.drawString(72, 700, "中文文本测试，CID字体。Mixed English words.")
        c.saveState()
        text = c.beginText(72, 680)
        text.setFont("STSong-Light", 12)
        text.setCharSpace(3)  # letter-spaced Chinese: no spaces come out
        text.textOut("字距加宽的中文行")
        c.drawText(text)
        text = c.beginText(72, 660)
        text.setFont("Helvetica", 12)
        text.setCharSpace(3)  # letter-spaced Latin: the words stay whole
        text.textOut("Spaced Heading")
        c.drawText(text)
        c.restoreState()
        c.setFont("Helvetica", 12)
        x = 72.0
        for word in ("words", "placed", "one", "by", "one"):  # no space characters (LaTeX)
            c.drawString(x, 640, word)
            x += stringWidth(word, "Helvetica", 12) + 3.3
        c.setFont("STSong-Light", 12)
        c.drawString(72, 620, "第一章　总则")  # an ideographic space stays a space
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    assert [line.text for line in page.lines] == [
        "中文文本测试，CID字体。Mixed English words.",
        "字距加宽的中文行",
        "Spaced Heading",
        "words placed one by one",
        "第一章 总则",
    ]


def test_ligatures_are_spelled_out_with_a_box_per_letter():
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font.exists():
        pytest.skip("DejaVu Sans is not installed")
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    pdfmetrics.registerFont(TTFont("DejaVuSans", str(font)))

    def draw(c):
        c.setFont("DejaVuSans", 12)
        c.drawString(72, 700, "The \ufb01le in the of\ufb01ce.")
        c.showPage()

    (page,) = read_layout(_canvas_pdf(draw))
    (line,) = page.lines
    assert line.text == "The file in the office."
    assert len(line.char_boxes) == len(line.text)
    f, i = line.text.index("fi"), line.text.index("fi") + 1
    assert line.char_boxes[f] == line.char_boxes[i]  # one glyph, two letters


def test_char_boxes_sequence():
    from ingest.loaders.pdf_layout import CharBoxes

    boxes = CharBoxes([Box(1, 2, 3, 4), None, (5.0, 6.0, 7.0, 8.0)])
    assert len(boxes) == 3
    assert boxes[0] == Box(1, 2, 3, 4) and boxes[1] is None and boxes[-1] == Box(5, 6, 7, 8)
    assert boxes[1:] == [None, Box(5, 6, 7, 8)] and next(iter(boxes)).width == 2
    with pytest.raises(IndexError):
        boxes[3]
    assert Box.union([boxes[0], boxes[2]]) == Box(1, 2, 7, 8)
