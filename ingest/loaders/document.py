"""What every loader returns (:class:`LoadedDocument` of :class:`Page` s) and the text clean-up
they share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Page:
    """One page of a document. ``number`` is 1-based for PDFs and None for other formats.

    ``ocr``: the text was recognised from the page's image (a scanned PDF page), not read from
    a text layer. ``layout``: for a PDF page read from its text layer, its
    :class:`ingest.loaders.pdf_layout.PageLayout` (lines and their boxes; ``text`` is its text
    tidied, which changes only whitespace); None for other pages, OCR'd ones included."""

    number: int | None
    text: str
    ocr: bool = False
    layout: Any = field(default=None, repr=False, compare=False)


@dataclass
class LoadedDocument:
    path: Path
    file_type: str
    """``text``, ``markdown``, ``pdf``, ``docx`` or ``html``."""
    title: str
    pages: list[Page] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """What was read only in part, one message each (a PDF page whose OCR failed, pages
    skipped because OCR is not available); the file itself was read."""

    @property
    def text(self) -> str:
        """All pages' text, separated by blank lines."""
        return "\n\n".join(p.text for p in self.pages)


NEWLINES = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")


def clean_text(text: str) -> str:
    """Normalise newlines to ``\\n`` and remove NUL characters."""
    return NEWLINES.sub("\n", text.replace("\x00", ""))


CJK = (
    "\u2e80-\u2fdf\u3001-\u303f\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
)
"""Character ranges of Chinese, Japanese and full-width text (for regular expressions)."""
