"""Errors raised while reading, splitting and storing documents.

Every problem with one input file is a :class:`DocumentError` that names the file and the reason,
so callers can report it per file and carry on with the others.
"""

from __future__ import annotations

from pathlib import Path


class DocumentError(Exception):
    """A file could not be ingested. ``str(err)`` is ``"{path}: {reason}"``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedFileType(DocumentError):
    """The file's type is not one we can read."""


class FileTooLarge(DocumentError):
    """The file is above the configured size limit."""


class UnreadableFile(DocumentError):
    """The file is damaged, truncated, binary, or not what its name says."""


class EncryptedPdf(DocumentError):
    """The PDF needs a password."""


class NoTextLayer(DocumentError):
    """No page of the PDF has text: no text layer and OCR is not available, or OCR found none."""


class EmptyDocument(DocumentError):
    """The file holds no text at all."""


class StoreError(Exception):
    """A problem with the knowledge base itself rather than with one input file."""


class StoreBusy(StoreError):
    """Another process is writing to the same knowledge base."""


class EmbedderMismatch(StoreError):
    """The knowledge base was built with another embedder than the one configured."""


class EmbedderUnavailable(StoreError):
    """The configured embedding model cannot be loaded (not on disk and no way to download it)."""
