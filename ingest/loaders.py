"""Read one file into plain text: ``load_document(path) -> LoadedDocument``.

Supported: plain text and Markdown (``.txt``, ``.md``, ``.markdown``), PDF (text layer, via
pypdf), Word (``.docx``, via python-docx) and HTML (``.html``, ``.htm``, via BeautifulSoup + lxml).

Every problem with the file is reported as a :class:`ingest.errors.DocumentError` subclass naming
the file and the reason; no other exception type leaves :func:`load_document`.

Headings the loader finds (Markdown ``#`` lines, DOCX heading styles, HTML ``h1``-``h6``) come out
as Markdown heading lines (``# 标题``) so that the splitter can keep them as context.

Text encodings (plain text and HTML)
------------------------------------
:func:`decode_bytes` decides, in this order:

1. a byte-order mark (UTF-8, UTF-32 LE/BE, UTF-16 LE/BE);
2. BOM-less UTF-16 recognised by its NUL-byte pattern (every other byte NUL in ASCII-heavy text);
3. NUL bytes otherwise: trailing NUL padding is dropped; a few stray NULs (at most 8, or 1% of the bytes)
   are removed; more than that means binary data and the file is refused;
4. strict UTF-8;
5. a scored contest between the strict decodes that succeed among GB18030 (a superset of GBK and
   GB2312), CP950 and Big5-HKSCS (Big5 variants), plus UTF-8 with replacement characters when the
   damage is small (invalid bytes at most 1% of all bytes *and* at most 5% of the non-ASCII bytes).
   Each decoded text is scored per character: very frequent Chinese characters score highest,
   characters from the "common" tables (GB2312 level 1, Big5 level 1) score positively, CJK
   punctuation a little, rare ideographs, kana, symbols negatively, and private-use characters,
   replacement characters and control characters strongly negatively. GBK bytes read as Big5
   produce level-2 (rare) ideographs and kana, Big5 bytes read as GBK produce GBK/3-4 ideographs,
   kana and private-use characters, so the right reading wins even on a few characters. Ties go
   to GB18030;
6. when no Chinese reading has positive evidence, charset-normalizer's best guess (other legacy
   encodings such as cp1252), and UTF-8 with replacement when at most 1% of the bytes are invalid;
7. the chosen text must look like text: more than 5% control / private-use / replacement
   characters means binary data and the file is refused.

charset-normalizer is deliberately not the first resort: on short GBK text it often answers Big5
or a Cyrillic code page.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ingest.errors import (
    DocumentError,
    EmptyDocument,
    EncryptedPdf,
    FileTooLarge,
    NoTextLayer,
    UnreadableFile,
    UnsupportedFileType,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LoadedDocument",
    "Page",
    "decode_bytes",
    "load_document",
]

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES: frozenset[str] = frozenset(TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"})

FILE_TYPES = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
}

# Guards against decompression bombs in DOCX (a zip of XML).
MAX_DOCX_XML_BYTES = 256 * 1024 * 1024


@dataclass
class Page:
    """One page of a document. ``number`` is 1-based for PDFs and None for other formats."""

    number: int | None
    text: str


@dataclass
class LoadedDocument:
    path: Path
    file_type: str
    """``text``, ``markdown``, ``pdf``, ``docx`` or ``html``."""
    title: str
    pages: list[Page] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All pages' text, separated by blank lines."""
        return "\n\n".join(p.text for p in self.pages)


# --------------------------------------------------------------------------------------------
# Entry point


def load_document(path: str | Path, max_bytes: int | None = None) -> LoadedDocument:
    """Read ``path`` into a :class:`LoadedDocument`.

    Raises a :class:`DocumentError` subclass (and nothing else) when the file cannot be read:
    :class:`UnsupportedFileType`, :class:`FileTooLarge` (checked before reading),
    :class:`EmptyDocument`, :class:`EncryptedPdf`, :class:`NoTextLayer`, :class:`UnreadableFile`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"'{suffix}'" if suffix else "a file without an extension"
        raise UnsupportedFileType(
            path,
            f"unsupported file type {kind}; supported types are "
            + ", ".join(sorted(SUPPORTED_SUFFIXES)),
        )
    try:
        if not path.exists():
            raise UnreadableFile(path, "no such file")
        if not path.is_file():
            raise UnreadableFile(path, "not a regular file")
        size = path.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise FileTooLarge(
                path,
                f"file is {_human_size(size)}, over the limit of {_human_size(max_bytes)}",
            )
        if suffix == ".pdf":
            doc = _load_pdf(path, size)
        elif suffix == ".docx":
            doc = _load_docx(path, size)
        elif suffix in HTML_SUFFIXES:
            doc = _load_html(path)
        else:
            doc = _load_text(path, FILE_TYPES[suffix])
    except DocumentError:
        raise
    except MemoryError:
        raise UnreadableFile(path, "ran out of memory while reading the file") from None
    except RecursionError:
        raise UnreadableFile(path, "structure is nested too deeply to read") from None
    except OSError as exc:
        raise UnreadableFile(path, f"cannot read the file: {exc.strerror or exc}") from exc
    except Exception as exc:  # third-party parsers raise all kinds of things on bad input
        raise UnreadableFile(path, f"damaged or not a valid {suffix[1:].upper()} file "
                                   f"({type(exc).__name__}: {exc})") from exc
    if not any(p.text.strip() for p in doc.pages):
        if doc.file_type == "pdf":
            raise NoTextLayer(
                path,
                "no page has extractable text; it looks like a scanned PDF (images only) and "
                "OCR is not available",
            )
        raise EmptyDocument(path, "the file holds no text")
    return doc


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


# --------------------------------------------------------------------------------------------
# Shared text clean-up

_NEWLINES = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")


def _clean_text(text: str) -> str:
    """Normalise newlines to ``\\n`` and remove NUL characters."""
    return _NEWLINES.sub("\n", text.replace("\x00", ""))


_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _first_markdown_heading(text: str) -> str | None:
    m = _MD_HEADING.search(text)
    return m.group(2).strip() if m else None


# --------------------------------------------------------------------------------------------
# Plain text and Markdown


def _load_text(path: Path, file_type: str) -> LoadedDocument:
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocument(path, "the file is empty" if not data else "the file holds only whitespace")
    try:
        text, _encoding = decode_bytes(data)
    except ValueError as exc:
        raise UnreadableFile(path, str(exc)) from None
    text = _clean_text(text)
    title = path.stem
    if file_type == "markdown":
        title = _first_markdown_heading(text) or path.stem
    return LoadedDocument(path=path, file_type=file_type, title=title, pages=[Page(None, text)])


# --------------------------------------------------------------------------------------------
# Encoding detection

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Chinese legacy encodings tried strictly, in tie-break order.
_CJK_CANDIDATES = ("gb18030", "cp950", "big5hkscs")

# The most frequent Chinese characters (simplified); their traditional forms are added at run time.
_FREQUENT_SIMPLIFIED = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
    "对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头"
    "面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向"
    "情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信"
    "北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难"
    "神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物"
    "台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指"
    "思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步"
    "完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双"
    "历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞"
    "观争究包组造落视济喜离虽坏兴切料术据支持统研究问题系统数据方法技术文档处理信息模型中文英文"
)

_CJK_PUNCT_RANGES = ((0x3001, 0x303F), (0xFF01, 0xFF5E), (0xFE30, 0xFE4F))


@lru_cache(maxsize=1)
def _char_tables() -> tuple[frozenset[str], frozenset[str]]:
    """(frequent characters, common characters) for scoring Chinese decodes."""
    common: set[str] = set()
    # GB2312 level 1: the 3,755 most used simplified characters (rows 0xB0-0xD7).
    for lead in range(0xB0, 0xD8):
        for trail in range(0xA1, 0xFF):
            try:
                common.add(bytes((lead, trail)).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    # Big5 level 1: the 5,401 most used traditional characters (0xA440-0xC67E).
    for lead in range(0xA4, 0xC7):
        for trail in list(range(0x40, 0x7F)) + list(range(0xA1, 0xFF)):
            code = (lead << 8) | trail
            if code > 0xC67E:
                break
            try:
                common.add(bytes((lead, trail)).decode("cp950"))
            except UnicodeDecodeError:
                pass
    frequent = set(_FREQUENT_SIMPLIFIED)
    try:
        from opencc import OpenCC

        frequent |= set(OpenCC("s2t").convert(_FREQUENT_SIMPLIFIED))
    except Exception:  # opencc missing or broken: simplified forms only
        pass
    common -= {c for c in common if ord(c) < 0x2E80}  # only ideographs count as "common"
    return frozenset(frequent), frozenset(common)


def _char_score(ch: str, frequent: frozenset[str], common: frozenset[str]) -> int:
    o = ord(ch)
    if o < 0x80:
        if o < 0x20 and ch not in "\t\n\r\x0c":
            return -5
        return 0
    if ch in frequent:
        return 3
    if ch in common:
        return 1
    for lo, hi in _CJK_PUNCT_RANGES:
        if lo <= o <= hi:
            return 1
    if 0xE000 <= o <= 0xF8FF or o == 0xFFFD or 0xF0000 <= o or 0x80 <= o < 0xA0:
        return -5
    if 0x4E00 <= o <= 0x9FFF:
        return -1
    if 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x3FFFF:
        return -2
    return -1


def _score(text: str) -> int:
    frequent, common = _char_tables()
    sample = text[:_SCORE_SAMPLE]
    return sum(
        _char_score(ch, frequent, common) for ch in sample if ord(ch) >= 0x80 or ord(ch) < 0x20
    )


_SCORE_SAMPLE = 200_000


_BAD_CHARS = re.compile(
    "[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f\ufffd\ue000-\uf8ff\ud800-\udfff"
    "\U000f0000-\U0010ffff]"
)


def _bad_char_ratio(text: str) -> float:
    """Share of characters that do not belong in text (controls, private use, U+FFFD)."""
    if not text:
        return 0.0
    return len(_BAD_CHARS.findall(text)) / len(text)


def _utf16_without_bom(data: bytes) -> str | None:
    """Recognise BOM-less UTF-16 of mostly-ASCII text by its NUL pattern."""
    n = len(data) - (len(data) % 2)
    if n < 4:
        return None
    even_nul = data[0:n:2].count(0)
    odd_nul = data[1:n:2].count(0)
    pairs = n // 2
    if odd_nul >= 0.4 * pairs and even_nul <= 0.05 * pairs:
        encoding = "utf-16-le"
    elif even_nul >= 0.4 * pairs and odd_nul <= 0.05 * pairs:
        encoding = "utf-16-be"
    else:
        return None
    if len(data) % 2:
        return None
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return None
    return encoding


def _utf8_damage(data: bytes) -> tuple[str, int]:
    """UTF-8 decode with replacement characters; also returns how many bytes were invalid."""
    escaped = data.decode("utf-8", errors="surrogateescape")  # each bad byte -> U+DC80..U+DCFF
    bad = len(_ESCAPED.findall(escaped))
    return (_ESCAPED.sub("\ufffd", escaped) if bad else escaped), bad


_ESCAPED = re.compile("[\udc80-\udcff]")


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode the bytes of a text file; returns ``(text, encoding)``.

    Raises ValueError, with a reason fit for a user, when the bytes do not look like text.
    See the module docstring for the method.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue  # e.g. FF FE 00 00 that is really UTF-16 text starting with NUL
            return _check_text(text, encoding), encoding

    encoding = _utf16_without_bom(data)
    if encoding:
        return _check_text(data.decode(encoding), encoding), encoding

    if b"\x00" in data:
        stripped = data.rstrip(b"\x00")
        nuls = stripped.count(0)
        if nuls > max(8, len(stripped) // 100):
            raise ValueError(
                f"contains {nuls} NUL bytes; this looks like binary data, not a text file"
            )
        data = stripped.replace(b"\x00", b"")

    try:
        return _check_text(data.decode("utf-8"), "utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass

    candidates: list[tuple[int, int, str, str]] = []  # (score, -order, encoding, text)
    for order, encoding in enumerate(_CJK_CANDIDATES):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        candidates.append((_score(text), -order, encoding, text))

    if len(data) % 2 == 0:  # BOM-less UTF-16 Chinese has no NUL pattern; let it compete too
        for order, encoding in enumerate(("utf-16-le", "utf-16-be"), start=len(_CJK_CANDIDATES)):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:
                continue
            candidates.append((_score(text), -order, encoding, text))

    utf8_text, damage = _utf8_damage(data)
    non_ascii = sum(1 for b in data if b >= 0x80)
    if damage <= len(data) * 0.01 and damage <= non_ascii * 0.05:
        candidates.append((_score(utf8_text), -9, "utf-8 (damaged)", utf8_text))
    mixed = _mixed_utf8_legacy(data)
    if mixed is not None:
        candidates.append((_score(mixed), -10, "utf-8 + gb18030/big5 (mixed)", mixed))

    best = max(candidates) if candidates else None
    if best is not None and best[0] > 0:
        return _check_text(best[3], best[2]), best[2]

    try:  # Western European legacy text is the likeliest remaining case
        text = data.decode("cp1252")
        if _bad_char_ratio(text) <= 0.01:
            return text, "cp1252"
    except UnicodeDecodeError:
        pass
    guess = _charset_normalizer_guess(data)
    if guess is not None:
        text, encoding = guess
        if _bad_char_ratio(text) <= 0.01:
            return text, encoding
    if damage <= len(data) * 0.01:
        return _check_text(utf8_text, "utf-8 (damaged)"), "utf-8 (damaged)"
    if best is not None:
        return _check_text(best[3], best[2]), best[2]
    raise ValueError(
        "cannot decode the text: it is not UTF-8, UTF-16, GB18030/GBK or Big5, "
        "and looks like binary data"
    )


# Runs of at least two UTF-8 characters of three or four bytes (CJK and above): such runs
# almost never arise by chance from GBK or Big5 bytes, so they anchor the UTF-8 parts of a line.
_UTF8_ANCHORS = re.compile("[\u0800-\ud7ff\ue000-\U0010ffff]{2,}")
_UTF8_WIDE = re.compile("[\u0800-\ud7ff\ue000-\U0010ffff]")


def _mixed_utf8_legacy(data: bytes) -> str | None:
    """Text in which UTF-8 and a Chinese legacy encoding are mixed (files pasted together, a
    GBK log appended to a UTF-8 one). Line by line: a line that is valid UTF-8 with CJK (or
    plain ASCII) stays UTF-8; any other line keeps its runs of UTF-8 CJK characters and decodes
    every stretch between them with its best-scoring Chinese encoding. None when there is no mix.
    """
    escaped = data.decode("utf-8", errors="surrogateescape")
    if not _ESCAPED.search(escaped):
        return None
    parts: list[str] = []
    utf8_seen = False
    for line in re.split(r"(?<=\n)", escaped):
        if not _ESCAPED.search(line) and (line.isascii() or _UTF8_WIDE.search(line)):
            parts.append(line)
            utf8_seen = utf8_seen or not line.isascii()
            continue
        last = 0
        for m in _UTF8_ANCHORS.finditer(line):
            parts.append(_best_legacy(line[last : m.start()]))
            parts.append(m.group())
            last = m.end()
            utf8_seen = True
        parts.append(_best_legacy(line[last:]))
    return "".join(parts) if utf8_seen else None


def _best_legacy(segment: str) -> str:
    if segment.isascii():
        return segment
    raw = segment.encode("utf-8", errors="surrogateescape")
    best: tuple[int, int, str] | None = None
    for order, encoding in enumerate(_CJK_CANDIDATES):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        candidate = (_score(text), -order, text)
        best = candidate if best is None else max(best, candidate)
    return best[2] if best is not None else raw.decode("gb18030", errors="replace")


def _charset_normalizer_guess(data: bytes) -> tuple[str, str] | None:
    try:
        from charset_normalizer import from_bytes

        match = from_bytes(data).best()
    except Exception:
        return None
    if match is None:
        return None
    try:
        return str(match), match.encoding
    except Exception:
        return None


def _check_text(text: str, encoding: str) -> str:
    ratio = _bad_char_ratio(text.replace("\x00", ""))
    if ratio > 0.05:
        raise ValueError(
            f"decoded as {encoding}, {ratio:.0%} of the characters are control or unassigned "
            "characters; this looks like binary data, not a text file"
        )
    return text


# --------------------------------------------------------------------------------------------
# PDF

_CJK = (
    "\u2e80-\u2fdf\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
)
_CJK_SPACES = re.compile(rf"(?<=[{_CJK}])[ \t\u00a0\u3000]+(?=[{_CJK}])")
# A single line break inside a CJK sentence is a PDF line wrap, not a paragraph end.
_CJK_WRAP = re.compile(rf"(?<=[{_CJK}])(?<![。！？：；」』”’）】…])[ \t]*\n[ \t]*(?=[{_CJK}])")


def _tidy_pdf_text(text: str) -> str:
    text = _clean_text(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _CJK_SPACES.sub("", text)
    text = _CJK_WRAP.sub("", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


# Titles that PDF writers fill in when the author gave none.
_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "(anonymous)", "anonymous", "无标题"})


def _load_pdf(path: Path, size: int) -> LoadedDocument:
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
            title = str(meta.title).strip().replace("\x00", "")
    except Exception:
        title = ""
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    return LoadedDocument(path=path, file_type="pdf", title=title or path.stem, pages=pages)


# --------------------------------------------------------------------------------------------
# DOCX

_HEADING_STYLE = re.compile(r"^(?:heading|标题|título|titre|überschrift)\s*([1-9])$", re.IGNORECASE)


def _heading_level(paragraph) -> int | None:
    style = None
    try:
        style = paragraph.style
    except Exception:
        style = None
    depth = 0
    while style is not None and depth < 8:
        name = (style.name or "").strip()
        m = _HEADING_STYLE.match(name)
        if m:
            return min(int(m.group(1)), 6)
        if name.lower() in ("title", "标题"):
            return 1
        try:
            style = style.base_style
        except Exception:
            style = None
        depth += 1
    # Direct outline level on the paragraph (w:pPr/w:outlineLvl, 0-based; 9 means body text).
    try:
        values = paragraph._p.xpath("./w:pPr/w:outlineLvl/@w:val")
        if values and int(values[0]) < 6:
            return int(values[0]) + 1
    except Exception:
        pass
    return None


def _docx_table_lines(table) -> list[str]:
    lines: list[str] = []
    try:
        for row in table.rows:
            cells: list[str] = []
            seen: set[int] = set()
            for cell in row.cells:
                key = id(cell._tc)
                if key in seen:  # a merged cell is reported once per grid column it spans
                    continue
                seen.add(key)
                cells.append(" ".join(cell.text.split()))
            if any(cells):
                lines.append(" | ".join(cells))
    except Exception:
        # Malformed table grid: fall back to the raw text runs, one row per line.
        lines = []
        for tr in table._tbl.iterchildren():
            if tr.tag.endswith("}tr"):
                texts = [t.text or "" for t in tr.iter() if t.tag.endswith("}t")]
                line = " ".join("".join(texts).split())
                if line:
                    lines.append(line)
    return lines


def _load_docx(path: Path, size: int) -> LoadedDocument:
    if size == 0:
        raise UnreadableFile(path, "the file is empty (0 bytes), not a valid DOCX")
    with path.open("rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\xd0\xcf\x11\xe0"):
        raise UnreadableFile(
            path,
            "this is an old-style .doc or a password-protected Office file, not a DOCX; "
            "save it as .docx without a password",
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if "word/document.xml" not in names:
                raise UnreadableFile(path, "not a Word document (no word/document.xml inside)")
            total = sum(i.file_size for i in zf.infolist() if i.filename.endswith(".xml"))
            if total > MAX_DOCX_XML_BYTES:
                raise UnreadableFile(path, "the document's XML is unreasonably large (zip bomb?)")
    except zipfile.BadZipFile:
        raise UnreadableFile(path, "damaged or not a DOCX file (not a valid zip archive)") from None

    import docx
    from docx.table import Table

    document = docx.Document(str(path))
    lines: list[str] = []
    first_heading: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            table_lines = _docx_table_lines(block)
            if table_lines:
                lines.append("\n".join(table_lines))
            continue
        text = _clean_text(block.text).strip()
        if not text:
            continue
        level = _heading_level(block)
        if level:
            text = " ".join(text.split())
            if first_heading is None:
                first_heading = text
            lines.append("#" * level + " " + text)
        else:
            lines.append(text)
    body = "\n\n".join(lines)

    title = ""
    try:
        title = (document.core_properties.title or "").strip()
    except Exception:
        title = ""
    title = title or first_heading or path.stem
    return LoadedDocument(path=path, file_type="docx", title=title, pages=[Page(None, body)])


# --------------------------------------------------------------------------------------------
# HTML

_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""", re.I)
_HTML_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "cp950",
    "iso-8859-1": "cp1252",
    "latin1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
}

_DROP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "svg", "canvas", "iframe", "object",
     "embed", "select", "datalist", "math", "audio", "video", "picture", "map"}
)
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
     "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
     "hgroup", "hr", "html", "li", "main", "menu", "nav", "ol", "p", "pre", "section", "summary",
     "table", "tbody", "tfoot", "thead", "tr", "ul", "legend", "option"}
)
_HEADING_TAGS = {f"h{i}": i for i in range(1, 7)}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)


def _decode_html(data: bytes) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    m = _META_CHARSET.search(data[:4096])
    if m:
        name = m.group(1).decode("ascii", "replace").lower()
        name = _HTML_ALIASES.get(name, name)
        try:
            codecs.lookup(name)
            text = data.decode(name)
            if _bad_char_ratio(text) <= 0.05:
                return text
        except (LookupError, UnicodeDecodeError):
            pass  # the page lies about its encoding: detect instead
    text, _ = decode_bytes(data)
    return text


def _is_hidden(tag) -> bool:
    attrs = tag.attrs or {}
    if "hidden" in attrs:
        return True
    style = attrs.get("style")
    if isinstance(style, list):
        style = " ".join(style)
    if style and _HIDDEN_STYLE.search(style):
        return True
    if tag.name == "input" and str(attrs.get("type", "")).lower() == "hidden":
        return True
    return False


def _html_text(root) -> str:
    from bs4 import CData, NavigableString, Tag

    parts: list[str] = []
    pre_depth = 0
    # Iterative walk: deeply nested pages must not hit the recursion limit.
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # ("close", name)
            name = node[1]
            if name == "pre":
                pre_depth -= 1
            if name in _BLOCK_TAGS or name == "pre":
                parts.append("\n")
            continue
        if isinstance(node, NavigableString):
            if type(node) is not NavigableString and not isinstance(node, CData):
                continue  # comments, doctype, processing instructions
            s = str(node)
            parts.append(s if pre_depth else re.sub(r"\s+", " ", s))
            continue
        if not isinstance(node, Tag):
            continue
        name = (node.name or "").lower()
        if name in _DROP_TAGS or _is_hidden(node):
            continue
        if name in _HEADING_TAGS:
            text = " ".join(_html_text_flat(node).split())
            if text:
                parts.append(f"\n\n{'#' * _HEADING_TAGS[name]} {text}\n\n")
            continue
        if name == "br":
            parts.append("\n")
            continue
        if name in ("td", "th"):
            prev = node.find_previous_sibling(["td", "th"])
            if prev is not None:
                parts.append(" | ")
        if name == "pre":
            pre_depth += 1
        if name in _BLOCK_TAGS or name == "pre":
            parts.append("\n")
        stack.append(("close", name))
        stack.extend(reversed(list(node.children)))
    text = "".join(parts)
    lines = [line.strip() for line in _clean_text(text).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _html_text_flat(tag) -> str:
    """Visible text under ``tag`` (used for headings), skipping hidden and dropped elements."""
    from bs4 import NavigableString, Tag

    out: list[str] = []
    stack = [tag]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if type(node) is NavigableString:
                out.append(str(node))
            continue
        if isinstance(node, Tag):
            if node is not tag and ((node.name or "").lower() in _DROP_TAGS or _is_hidden(node)):
                continue
            if node.name == "br":
                out.append(" ")
                continue
            stack.extend(reversed(list(node.children)))
    return "".join(out)


def _load_html(path: Path) -> LoadedDocument:
    data = path.read_bytes()
    if not data.strip():
        raise EmptyDocument(path, "the file is empty" if not data else "the file holds only whitespace")
    try:
        markup = _decode_html(data)
    except ValueError as exc:
        raise UnreadableFile(path, str(exc)) from None
    markup = _clean_text(markup)
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "lxml")
    title = ""
    if soup.title is not None:
        title = " ".join(soup.title.get_text(" ").split())
    body_text = _html_text(soup)
    if not title:
        h1 = soup.find("h1")
        if h1 is not None:
            title = " ".join(_html_text_flat(h1).split())
    return LoadedDocument(
        path=path, file_type="html", title=title or path.stem, pages=[Page(None, body_text)]
    )
