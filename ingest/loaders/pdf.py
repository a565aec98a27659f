"""PDF: the text layer of each page (pypdf), tidied for reading and search: Latin ligature
characters are spelled out (ﬁ -> fi, ﬃ -> ffi); letter spacing between single CJK characters
goes while a gap between words or table cells stays one space; a wrapped Chinese sentence is
joined again, while a line that ends on purpose (a heading, a page header, a table row, a
paragraph's last line: anything shorter than a full line) keeps its own line."""

from __future__ import annotations

import io
import re
import unicodedata
from pathlib import Path

from ingest.errors import EncryptedPdf, UnreadableFile
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


def load_pdf(path: Path, size: int) -> LoadedDocument:
    if size == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes), not a valid PDF")
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    data = path.read_bytes()
    if b"%PDF" not in data[:1024]:
        raise UnreadableFile(path, "not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
    except DependencyError as exc:
        raise EncryptedPdf(path, f"the PDF is encrypted and cannot be opened here ({exc})") from None
    except Exception as exc:
        raise UnreadableFile(path, f"damaged or truncated PDF ({type(exc).__name__}: {exc})") from None

    if reader.is_encrypted:
        try:
            ok = reader.decrypt("")
        except DependencyError:
            raise EncryptedPdf(
                path,
                "the PDF is encrypted with AES, which needs the 'cryptography' package to open",
            ) from None
        except Exception as exc:
            raise EncryptedPdf(path, f"the PDF is encrypted and could not be opened ({exc})") from None
        if not ok:
            raise EncryptedPdf(path, "the PDF is password-protected; remove the password and try again")

    try:
        page_list = list(reader.pages)
    except FileNotDecryptedError:
        raise EncryptedPdf(path, "the PDF is password-protected") from None
    except Exception as exc:
        raise UnreadableFile(path, f"damaged or truncated PDF ({type(exc).__name__}: {exc})") from None
    if not page_list:
        raise UnreadableFile(path, "the PDF has no pages")

    pages: list[Page] = []
    for number, page in enumerate(page_list, start=1):
        try:
            raw = page.extract_text() or ""
        except FileNotDecryptedError:
            raise EncryptedPdf(path, "the PDF is password-protected") from None
        except Exception as exc:
            raise UnreadableFile(
                path, f"page {number} is damaged ({type(exc).__name__}: {exc})"
            ) from None
        pages.append(Page(number, _tidy_pdf_text(raw)))

    title = ""
    try:
        meta = reader.metadata
        if meta is not None and meta.title:
            title = str(meta.title).strip().replace("\x00", "").translate(LIGATURES)
    except Exception:
        title = ""
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    return LoadedDocument(path=path, file_type="pdf", title=title or path.stem, pages=pages)
