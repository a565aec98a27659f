"""PDF: the text layer of each page (pypdf), tidied for Chinese (no spaces or line wraps
between CJK characters)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from ingest.errors import EncryptedPdf, UnreadableFile
from ingest.loaders.document import CJK, LoadedDocument, Page, clean_text

_CJK_SPACES = re.compile(rf"(?<=[{CJK}])[ \t\u00a0\u3000]+(?=[{CJK}])")
# A single line break inside a CJK sentence is a PDF line wrap, not a paragraph end.
_CJK_WRAP = re.compile(rf"(?<=[{CJK}])(?<![。！？：；」』”’）】…])[ \t]*\n[ \t]*(?=[{CJK}])")


def _tidy_pdf_text(text: str) -> str:
    text = clean_text(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = _CJK_SPACES.sub("", text)
    text = _CJK_WRAP.sub("", text)
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
            title = str(meta.title).strip().replace("\x00", "")
    except Exception:
        title = ""
    if title.lower() in _PLACEHOLDER_TITLES:
        title = ""
    return LoadedDocument(path=path, file_type="pdf", title=title or path.stem, pages=pages)
