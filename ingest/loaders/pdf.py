"""PDF: each page's text in reading order (:mod:`ingest.loaders.pdf_layout`, PDFium: text
columns read one after the other, running heads, footers and page numbers left out), tidied for
reading and search: Latin ligature characters are spelled out (ﬁ -> fi, ﬃ -> ffi); letter
spacing between single CJK characters goes while a gap between words or table cells stays one
space; a wrapped Chinese sentence is joined again, while a line that ends on purpose (a heading,
a table row, a paragraph's last line: anything shorter than a full line) keeps its own line.

A page without a usable text layer (a scan: no text at all, or a garbled one, mostly private-use
or replacement characters, or no letters) is rendered and read by OCR (:mod:`ingest.ocr`), page
by page, and marked ``Page.ocr``; blank pages are not OCR'd. A page whose OCR fails, and pages
skipped because OCR is not available, are listed in ``LoadedDocument.warnings`` and the rest is
read; only a PDF in which no page has text is refused (:class:`NoTextLayer`).

``on_page(n, total)`` (optional) is told as OCR of each such page begins: the n-th (1-based) of
the ``total`` pages that have no usable text layer (a scan of 12 pages: 1 of 12 ... 12 of 12)."""

from __future__ import annotations

import math
import re
import unicodedata
from pathlib import Path
from typing import Callable

from ingest.errors import EmptyDocument, EncryptedPdf, NoTextLayer, UnreadableFile
from ingest.loaders.document import CJK, LoadedDocument, Page, clean_text

_CJK_SPACES = re.compile(rf"(?<=[{CJK}])[ \t\u00a0\u3000]+(?=[{CJK}])")
_CJK_CHAR = re.compile(rf"[{CJK}]")
# A single line break inside a CJK sentence is a PDF line wrap, not a paragraph end; after these
# a sentence (or a quotation) ends, so a line break after them stays.
_SENTENCE_CLOSE = "。！？：；」』”’）】…"

# The Latin ligatures of the Alphabetic Presentation Forms block (U+FB00-FB06). Fonts (TeX's
# above all) draw "ffi" as one glyph, and the text layer then holds U+FB03, which no query typed
# as "office" matches. The letters are what a reader sees.
LIGATURES = str.maketrans(
    {"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
     "\ufb05": "st", "\ufb06": "st"}
)

# Lines that number a part of the text: 第二章 / 第三节 / 一、 / （一） / 1.2 / 1、 ...
_NUMERAL = "0-9０-９一二三四五六七八九十百千零〇两"
_HEADING_NUMBER = re.compile(
    rf"^(?:第[{_NUMERAL}]+[章节篇部卷编]"
    rf"|[一二三四五六七八九十]+[、．.]"
    rf"|[（(][{_NUMERAL}]+[)）]"
    rf"|[0-9０-９]+(?:[.．][0-9０-９]+)+"
    rf"|[0-9０-９]+[、．.]"
    rf"|附[件录](?:\s*[{_NUMERAL}A-Za-z]+)?(?=[\s:：]|$))"
)
# Punctuation inside a sentence or at its end: a heading has none.
_SENTENCE_PUNCT = re.compile(r"[，。；！？：,;!?]")
_HEADING_MAX_CHARS = 30


def _width(line: str) -> int:
    """Display width: wide (CJK) characters count two, others one."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def _is_numbered_heading(line: str) -> bool:
    """A line such as 第二章 维护 / 一、总则 / （一）范围 / 1.2 检查: a number of a part of the text,
    at most 30 characters and no sentence punctuation."""
    line = line.strip()
    return (
        bool(_HEADING_NUMBER.match(line))
        and len(line) <= _HEADING_MAX_CHARS
        and not _SENTENCE_PUNCT.search(line)
    )


_CJK_GAP = re.compile(rf"(?<=[{CJK}])[ \t\u00a0\u3000]+(?=[{CJK}])")
FULL_LINE = 0.8
"""A line at least this share of the page's usual full width may be a wrapped one."""


def _letter_spaced(line: str) -> bool:
    """Whether the gaps between CJK characters in ``line`` are letter spacing (北 京 是 首 都),
    which goes, rather than separators between table cells or words (区域 样本数 占比), which stay."""
    pieces = [p for p in _CJK_GAP.split(line.strip()) if p]
    if len(pieces) < 2:
        return False
    single = sum(1 for p in pieces if len(p) == 1)
    return single >= 0.7 * len(pieces)


def _tidy_gaps(line: str) -> str:
    return _CJK_GAP.sub("", line) if _letter_spaced(line) else _CJK_GAP.sub(" ", line)


def _full_width(lines: list[str]) -> float:
    """The page's usual width of a full line: the 90th percentile of its line widths, so one
    overlong line (a URL) does not make every other line look short."""
    widths = sorted(_width(line.strip()) for line in lines if line.strip())
    if not widths:
        return 0.0
    return float(widths[min(len(widths) - 1, int(0.9 * len(widths)))])


def _wraps_on(previous: str, full: float) -> bool:
    """Whether ``previous`` is the first part of a wrapped sentence: a PDF only wraps a line that
    is full, so a short line (a heading, a header, a paragraph's last line, a table row) ends
    where it ends, as does a numbered heading or a line of cells (CJK runs with gaps between)."""
    line = previous.strip()
    return (
        full >= 20
        and _width(line) >= FULL_LINE * full
        and not _is_numbered_heading(line)
        and not _CJK_GAP.search(line)
    )


def _join_cjk_wraps(text: str) -> str:
    """Join the lines of a wrapped CJK sentence (spaces around the break go too); a line that
    ends on purpose (see :func:`_wraps_on`) is not joined to the next one, nor is a line to a
    numbered heading."""
    lines = text.split("\n")
    full = _full_width(lines)
    out: list[str] = []
    previous = ""  # the last line as it came, before joining
    for line in lines:
        head = line.lstrip(" \t")
        if (
            out
            and previous
            and _CJK_CHAR.match(previous[-1])
            and previous[-1] not in _SENTENCE_CLOSE
            and head
            and _CJK_CHAR.match(head)
            and _wraps_on(previous, full)
            and not _is_numbered_heading(head)
        ):
            out[-1] = out[-1].rstrip(" \t") + head
        else:
            out.append(line)
        previous = line.rstrip(" \t")
    return "\n".join(out)


def _tidy_pdf_text(text: str) -> str:
    text = clean_text(text).translate(LIGATURES)
    text = "\n".join(_tidy_gaps(line.rstrip()) for line in text.split("\n"))
    text = _join_cjk_wraps(text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


# Titles that PDF writers fill in when the author gave none.
_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "(anonymous)", "anonymous", "无标题"})


def _open_error(path: Path, exc: Exception) -> Exception:
    """PDFium's error opening ``path`` as the project's error, with the file name and reason."""
    import pypdfium2.raw as pdfium_c

    code = getattr(exc, "err_code", None)
    if code == pdfium_c.FPDF_ERR_PASSWORD:
        return EncryptedPdf(path, "the PDF is password-protected; remove the password and try again")
    if code == pdfium_c.FPDF_ERR_SECURITY:
        return EncryptedPdf(path, "the PDF is encrypted with a security handler that cannot be opened here")
    if code == pdfium_c.FPDF_ERR_FILE:
        return UnreadableFile(path, "the file could not be read")
    return UnreadableFile(path, f"damaged or truncated PDF ({exc})")


def _title(pdf) -> str:
    try:
        title = str(pdf.get_metadata_dict().get("Title") or "")
    except Exception:
        return ""
    title = " ".join(title.replace("\x00", "").split()).translate(LIGATURES)
    return "" if title.lower() in _PLACEHOLDER_TITLES else title


# -- which pages need OCR -------------------------------------------------------------------------

_GARBLED_SHARE = 0.5
"""A text layer with more than this share of private-use, replacement or unassigned characters
(a font without a usable map to Unicode) is garbled."""


def _is_garbled_char(ch: str) -> bool:
    return ch == "\ufffd" or unicodedata.category(ch) in ("Co", "Cn", "Cs")


def _text_problem(text: str) -> str | None:
    """Why a page's text layer is not usable: ``"empty"`` (no text: a scan, or a blank page),
    ``"garbled"`` (mostly private-use / replacement characters), ``"no letters"`` (digits and
    symbols only, no letters of any script); None when it is usable."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return "empty"
    if sum(1 for ch in chars if _is_garbled_char(ch)) > _GARBLED_SHARE * len(chars):
        return "garbled"
    if not any(ch.isalpha() for ch in chars):
        return "no letters"
    return None


def _page_list(numbers: list[int]) -> str:
    """1, 3-5, 9"""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


# -- OCR ----------------------------------------------------------------------------------------


def _edge_lines(lines, height: float) -> list[tuple[str, object]]:
    """The top row of an OCR'd page if it lies in the top band, and its bottom row if it lies in
    the bottom band (pdf_layout.BAND), as (band, line) for each line of the row: where running
    heads, footers and page numbers stand. A row, because a head with a wide gap in it (a title
    left, "第 3 页" right) comes out of OCR as two lines side by side."""
    from ingest.loaders.pdf_layout import BAND

    if len(lines) < 2:
        return []

    def same_row(line, edge) -> bool:
        overlap = min(line.box[3], edge.box[3]) - max(line.box[1], edge.box[1])
        return overlap >= 0.5 * min(line.box[3] - line.box[1], edge.box[3] - edge.box[1])

    out = []
    first = min(lines, key=lambda ln: ln.box[1])
    if first.box[3] <= BAND * height:
        out += [("top", ln) for ln in lines if same_row(ln, first)]
    last = max(lines, key=lambda ln: ln.box[3])
    if last is not first and last.box[1] >= (1 - BAND) * height:
        out += [("bottom", ln) for ln in lines if same_row(ln, last) and not same_row(ln, first)]
    return out


def _ocr_furniture(pages: dict[int, tuple[list, float]], known: set[tuple[str, str]]) -> set[int]:
    """``id`` s of OCR'd lines that are running heads, footers or page numbers: a line at the top
    or bottom edge of its page (:func:`_edge_lines`) that is a bare page number, or whose text
    (digits as ``#``) is that of the text layer's running heads (``known``: (band, key) pairs)
    or recurs at that edge on :data:`~ingest.loaders.pdf_layout.REPEAT_SHARE` of the OCR'd pages
    (and on two or more)."""
    from ingest.loaders.pdf_layout import REPEAT_SHARE, furniture_key, is_page_number

    edges = {index: _edge_lines(lines, height) for index, (lines, height) in pages.items()}
    seen: dict[tuple[str, str], set[int]] = {}
    for index, found in edges.items():
        for band, ln in found:
            seen.setdefault((band, furniture_key(ln.text)), set()).add(index)
    need = max(2, math.ceil(REPEAT_SHARE * len(pages)))
    out: set[int] = set()
    for found in edges.values():
        for band, ln in found:
            key = (band, furniture_key(ln.text))
            if is_page_number(ln.text) or key in known or len(seen[key]) >= need:
                out.add(id(ln))
    return out


def _ocr_lines_text(lines, drop: set[int]) -> str:
    """OCR'd lines (in reading order) as a page's text, without those in ``drop``: a line the
    detector cut in two (boxes side by side on one row, read one after the other) joined again
    with a space."""
    out: list[str] = []
    previous = None
    for ln in lines:
        if id(ln) in drop:
            continue
        if previous is not None:
            overlap = min(previous.box[3], ln.box[3]) - max(previous.box[1], ln.box[1])
            if overlap >= 0.5 * min(previous.height, ln.height) and ln.box[0] >= previous.box[2] - 1:
                out[-1] += " " + ln.text
                previous = ln
                continue
        out.append(ln.text)
        previous = ln
    return "\n".join(out)


def _paint_out(image, boxes, scale: float) -> None:
    """Paper over ``boxes`` (points) on a page image rendered at ``scale`` pixels a point."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for b in boxes:
        draw.rectangle((b.x0 * scale - 2, b.top * scale - 2, b.x1 * scale + 2, b.bottom * scale + 2),
                       fill=(255, 255, 255))


class _OcrOutcome:
    """What OCR of a document's pages came to (see :func:`_ocr_pages`)."""

    def __init__(self) -> None:
        self.unavailable: Exception | None = None
        self.skipped: list[int] = []  # pages not read because OCR is not available
        self.drawn = 0  # pages with something on them to read


OnPage = Callable[[int, int], None]
"""``on_page(n, total)``: OCR of the n-th of ``total`` pages to OCR begins."""


def _ocr_pages(pdf, doc: LoadedDocument, pending: list[tuple[int, str]],
               on_page: OnPage | None = None) -> _OcrOutcome:
    """OCR the pages in ``pending`` ((page index, problem) pairs) in place on ``doc``: an OCR'd
    page gets the recognised text and ``ocr=True``; a page that could not be read, a warning.
    ``on_page(n, len(pending))`` is called before the n-th page is drawn and read."""
    from ingest import ocr

    outcome = _OcrOutcome()
    scale = ocr.DEFAULT_DPI / 72.0
    problems = dict(pending)
    recognised: dict[int, tuple[list, float]] = {}  # page index -> (OCR'd lines, page height)
    sizes: dict[int, tuple[float, float]] = {}  # page index -> (width, height) in points
    for n, (index, problem) in enumerate(pending, start=1):
        if on_page is not None:
            on_page(n, len(pending))
        page = doc.pages[index]
        layout = page.layout
        if problem == "garbled":
            page.text, page.layout = "", None  # garbage is not indexed, whatever OCR finds
        try:
            image = ocr.render_pdf_page(pdf, index, ocr.DEFAULT_DPI)
        except Exception as exc:  # a page PDFium cannot draw: the others still count
            doc.warnings.append(f"page {page.number}: could not be drawn for OCR "
                                f"({type(exc).__name__}: {exc}); the page was skipped")
            continue
        # Running heads and page numbers of the text layer are not read again (nor is a page
        # that holds nothing else OCR'd at all).
        _paint_out(image, [line.box for line in layout.header_footer_lines], scale)
        if ocr.is_blank(image):
            if problem == "garbled":
                doc.warnings.append(f"page {page.number}: its text layer is garbled and the page "
                                    "shows nothing to OCR; the page was skipped")
            continue
        outcome.drawn += 1
        if outcome.unavailable is not None:
            outcome.skipped.append(page.number)
            continue
        try:
            lines = ocr.recognize_image(image, dpi=ocr.DEFAULT_DPI)
        except ocr.OcrUnavailable as exc:
            outcome.unavailable = exc
            outcome.skipped.append(page.number)
            continue
        except Exception as exc:  # one page's failure costs that page only
            doc.warnings.append(f"page {page.number}: OCR failed ({type(exc).__name__}: {exc}); "
                                "the page was skipped")
            continue
        finally:
            del image
        # Lines of symbols alone (a black box read as "■", a rule read as "—") are noise.
        lines = [ln for ln in lines if any(ch.isalnum() for ch in ln.text)]
        recognised[index] = (lines, layout.height)
        sizes[index] = (layout.width, layout.height)
    # Running heads, footers and page numbers of the OCR'd pages, as the text layer's are.
    from ingest.loaders.pdf_layout import furniture_key

    known = {
        ("top" if line.box.top < 0.5 * p.layout.height else "bottom", furniture_key(line.text))
        for p in doc.pages
        if p.layout is not None
        for line in p.layout.header_footer_lines
    }
    drop = _ocr_furniture(recognised, known)
    from ingest.loaders.pdf_layout import layout_from_lines

    for index, (lines, _) in recognised.items():
        page = doc.pages[index]
        text = _tidy_pdf_text(_ocr_lines_text(lines, drop))
        if problems[index] == "no letters" and not any(ch.isalpha() for ch in text):
            continue  # digits and symbols both ways (a table of figures): the text layer's stay
        if text.strip():
            # the recognised lines stand in for the text layer, so citations of the page are
            # highlighted too
            body = [(ln.text, ln.box) for ln in lines if id(ln) not in drop]
            page.text, page.ocr = text, True
            page.layout = layout_from_lines(body, index, *sizes[index])
        elif problems[index] == "garbled":
            doc.warnings.append(f"page {page.number}: its text layer is garbled and OCR found no "
                                "text on it; the page was skipped")
    if outcome.skipped:
        many = len(outcome.skipped) > 1
        doc.warnings.append(
            f"{'pages' if many else 'page'} {_page_list(outcome.skipped)} "
            f"{'have' if many else 'has'} no usable text layer and {'were' if many else 'was'} "
            f"not read: OCR is not available ({outcome.unavailable})"
        )
    return outcome


def _has_text(doc: LoadedDocument) -> bool:
    return any(p.text.strip() for p in doc.pages)


def load_pdf(path: Path, size: int, on_page: OnPage | None = None) -> LoadedDocument:
    if size == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes), not a valid PDF")
    import pypdfium2 as pdfium

    from ingest.loaders.pdf_layout import read_layout

    data = path.read_bytes()
    if b"%PDF" not in data[:1024]:
        raise UnreadableFile(path, "not a PDF file (no %PDF header)")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise _open_error(path, exc) from None
    try:
        if len(pdf) == 0:
            raise UnreadableFile(path, "the PDF has no pages")
        try:
            layouts = read_layout(pdf)
        except pdfium.PdfiumError as exc:
            raise UnreadableFile(path, f"damaged PDF: a page cannot be read ({exc})") from None
        doc = LoadedDocument(path=path, file_type="pdf", title=_title(pdf) or path.stem)
        pending: list[tuple[int, str]] = []
        for layout in layouts:
            text = _tidy_pdf_text(layout.text)
            doc.pages.append(Page(layout.page_index + 1, text, layout=layout))
            problem = _text_problem(text)
            if problem:
                pending.append((layout.page_index, problem))
        outcome = _ocr_pages(pdf, doc, pending, on_page) if pending else _OcrOutcome()
    finally:
        pdf.close()
    if not _has_text(doc):
        # Every line was taken for a running head or a page number (a few pages of one short
        # line each at the same place, say): better read as they are than refused.
        for page in doc.pages:
            if page.layout is not None and page.layout.header_footer_lines and not page.ocr:
                page.text = _tidy_pdf_text("\n".join(ln.text for ln in page.layout.header_footer_lines))
    if _has_text(doc):
        return doc
    if outcome.unavailable is not None:
        raise NoTextLayer(
            path,
            "no page has extractable text; it looks like a scanned PDF (images only) and OCR is "
            f"not available ({outcome.unavailable})",
        )
    if doc.warnings:
        raise NoTextLayer(path, "no page has extractable text: " + "; ".join(doc.warnings))
    if outcome.drawn:
        raise NoTextLayer(
            path,
            f"no page has extractable text: no text layer, and OCR found no text on the "
            f"{outcome.drawn} scanned page(s) (images or drawings without text)",
        )
    raise EmptyDocument(path, "every page of the PDF is blank (no text, nothing drawn)")
