"""Read one file into plain text: ``load_document(path) -> LoadedDocument``.

Supported: plain text and Markdown (``.txt``, ``.md``, ``.markdown``), PDF (the text layer in reading order via
pypdfium2, scanned pages by offline OCR), Word (``.docx``, via python-docx) and HTML (``.html``, ``.htm``, via BeautifulSoup + lxml).

Every problem with the file is reported as a :class:`ingest.errors.DocumentError` subclass naming
the file and the reason; no other exception type leaves :func:`load_document`.

Headings the loader finds (Markdown ``#`` lines, DOCX heading styles, HTML ``h1``-``h6``) come out
as Markdown heading lines (``# 标题``) so that the splitter can keep them as context.

One module per format (``text``, ``pdf``, ``docx``, ``html``) behind this one face; shared
data classes and clean-up helpers are in ``document``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ingest.errors import (
    DocumentError,
    EmptyDocument,
    FileTooLarge,
    NoTextLayer,
    UnreadableFile,
    UnsupportedFileType,
)
from ingest.loaders.document import LoadedDocument, Page
from ingest.loaders.docx import load_docx
from ingest.loaders.html import load_html
from ingest.loaders.pdf import load_pdf
from ingest.loaders.text import decode_bytes, load_text

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


def load_document(path: str | Path, max_bytes: int | None = None,
                  on_page: Callable[[int, int], None] | None = None) -> LoadedDocument:
    """Read ``path`` into a :class:`LoadedDocument`.

    ``on_page(n, total)``: for a PDF with pages that have no usable text layer, called as OCR of
    the n-th (1-based) of those ``total`` pages begins (OCR takes seconds a page); not called
    for other files. What was read only in part is in ``LoadedDocument.warnings``.

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
            doc = load_pdf(path, size, on_page)
        elif suffix == ".docx":
            doc = load_docx(path, size)
        elif suffix in HTML_SUFFIXES:
            doc = load_html(path)
        else:
            doc = load_text(path, FILE_TYPES[suffix])
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
