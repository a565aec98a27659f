"""Files in, searchable chunks out: load → split → embed → store, idempotent and crash-safe.

Usage::

    from rag.settings import Settings
    from ingest.pipeline import Ingestor

    ingestor = Ingestor(Settings().with_store("my_kb"))
    report = ingestor.ingest(["docs/", "notes.md"])
    print(report.to_dict())   # {"added": 3, "updated": 0, "unchanged": 1, ..., "failed": [...]}

A file is known by its content hash (the document id). A file whose content is already stored is
not read, split or embedded again; a changed file gets new chunks and its old ones go; the same
content under two names is stored once and listed under both names. One bad file is reported in
``report.failed`` and the others carry on.

Renames and moves: when a file's content is already stored, the document's other sources whose
files are gone are dropped in the same transaction that attaches the file (they are counted in
``report.removed``), so a renamed file is listed and cited under its new path only. Removing by
path or file name forgets that one file; removing by document id removes the document with all
its files (:meth:`Ingestor.remove`).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ingest.embeddings import Embedder, load_embedder
from ingest.errors import DocumentError, EmptyDocument, FileTooLarge, UnreadableFile
from ingest.lexical import search_tokens
from ingest.loaders import SUPPORTED_SUFFIXES, load_document
from ingest.splitter import split_document
from ingest.store import DocumentStore, NewChunk, PreparedDocument
from rag.settings import Settings

HASH_CHARS = 32


@dataclass
class FileFailure:
    path: str
    error: str


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    chunks: int = 0
    failed: list[FileFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files inside folders that were passed over because their type is not supported."""

    def to_dict(self) -> dict:
        """The CLI's ``--json`` object."""
        data = asdict(self)
        data.pop("skipped")
        return data

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class Progress:
    """How far along a run is. Sent when a file starts being read (``status="reading"``), after
    each slice of chunks is embedded (``"embedding"``) and when a file is finished (``added``,
    ``updated``, ``unchanged`` or ``failed``; then :attr:`finished` is true).

    ``done``/``total`` count files; ``chunks_done``/``chunks_total`` the chunks embedded so far
    and those read so far (the total grows as files are read). ``fraction`` (0..1) weighs files
    by size, reading as a fifth of a file's work and embedding as the rest; ``eta_s`` is the
    time left at the pace so far (None until there is a pace to go by)."""

    path: str
    status: str  # reading | embedding | added | updated | unchanged | failed
    done: int
    total: int
    error: str | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    fraction: float = 0.0
    eta_s: float | None = None

    @property
    def finished(self) -> bool:
        """True when ``path`` is finished (one such event per file)."""
        return self.status in FINISHED


FINISHED = frozenset({"added", "updated", "unchanged", "failed"})
READ_SHARE = 0.2
"""Share of a file's work that reading and splitting stand for in ``Progress.fraction``."""


class _Pace:
    """Byte-weighted progress of one run and the time left at its pace."""

    def __init__(self, files: list[Path]) -> None:
        self.size: dict[str, int] = {}
        for f in files:
            try:
                self.size[str(f)] = max(f.stat().st_size, 1)
            except OSError:
                self.size[str(f)] = 1
        self.total = sum(self.size.values()) or 1
        self.share: dict[str, float] = {}  # source → 0..1 of its work done
        self.started = time.monotonic()

    def set(self, source: str, share: float) -> None:
        self.share[source] = max(self.share.get(source, 0.0), min(share, 1.0))

    def fraction(self) -> float:
        return sum(self.size.get(s, 1) * v for s, v in self.share.items()) / self.total

    def eta(self) -> float | None:
        f = self.fraction()
        spent = time.monotonic() - self.started
        if f < 0.01 or spent < 0.5:
            return None
        return max(0.0, spent * (1 - f) / f)


ProgressCallback = Callable[[Progress], None]


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def printable_path(path: str | Path) -> str:
    """``path`` as text that can be printed, stored and put in JSON: bytes of a file name that
    are not UTF-8 (``os.fsdecode`` turns them into lone surrogates) are written as ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def discover(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path], list[FileFailure]]:
    """Expand folders (recursively, skipping hidden entries) into files.

    Returns (files to ingest, unsupported files found inside folders, failures for named paths
    that do not exist). A file named directly is always returned, whatever its type, so that an
    unsupported type is reported as an error rather than silently skipped.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    missing: list[FileFailure] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    if name.startswith("."):
                        continue
                    child = Path(root, name).resolve()
                    if child in seen:
                        continue
                    seen.add(child)
                    (files if child.suffix.lower() in SUPPORTED_SUFFIXES else skipped).append(child)
        elif path.is_file():
            resolved = path.resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(resolved)
        else:
            missing.append(FileFailure(printable_path(path), "no such file or folder"))
    return files, skipped, missing


class Ingestor:
    """Ingests files into one knowledge base (the store directory in ``settings``)."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        store: DocumentStore | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder or load_embedder(settings.embedding)
        self.store = store or DocumentStore.open(settings, self.embedder)

    # -- public ---------------------------------------------------------------------------------

    def ingest(self, paths: Iterable[str | Path], progress: ProgressCallback | None = None) -> IngestReport:
        paths = list(paths)
        if self.store.has_leftovers():
            # A killed run left pending rows: clean them up now, even if this run writes nothing.
            with self.store.writing():
                pass
        files, skipped, missing = discover(paths)
        report = IngestReport(failed=list(missing), skipped=[str(p) for p in skipped])
        total = len(files)
        batch: list[PreparedDocument] = []
        batch_chunks = 0
        done = 0
        pace = _Pace(files)
        chunks = {"done": 0, "total": 0}

        def tell(path: str, status: str, error: str | None = None) -> None:
            if progress:
                progress(Progress(path, status, done, total, error, chunks["done"], chunks["total"],
                                  pace.fraction(), pace.eta()))

        def finish(path: str, status: str, error: str | None = None) -> None:
            nonlocal done
            done += 1
            pace.set(path, 1.0)
            tell(path, status, error)

        def embedded(doc: PreparedDocument, share: float, n: int) -> None:
            chunks["done"] += n
            pace.set(doc.source, READ_SHARE + (1 - READ_SHARE) * share)
            tell(doc.source, "embedding")

        def flush() -> None:
            nonlocal batch, batch_chunks
            if not batch:
                return
            self._embed(batch, embedded)
            with self.store.writing():
                written = self.store.put_documents(batch)
            for doc in batch:
                status = "updated" if doc.source in updated_sources else "added"
                setattr(report, status, getattr(report, status) + 1)
                if doc.doc_id in written:  # not when another writer stored it meanwhile
                    report.chunks += len(doc.chunks)
                finish(doc.source, status)
            batch, batch_chunks = [], 0

        updated_sources: set[str] = set()
        pending_ids: set[str] = set()
        for path in files:
            source = str(path)
            try:
                if not _storable(source):
                    source = printable_path(source)
                    raise UnreadableFile(
                        source,
                        "the file name is not valid UTF-8 (perhaps from a zip made on another "
                        "system); rename the file and add it again",
                    )
                data = self._read(path)
                doc_id = content_id(data)
                previous = self.store.doc_for_source(source)
                if self.store.is_complete(doc_id) or doc_id in pending_ids:
                    if doc_id in pending_ids:
                        flush()  # the same content earlier in this run: store it first
                    if previous == doc_id and not self._moved_away(doc_id, source):
                        report.unchanged += 1
                        finish(source, "unchanged")
                    else:
                        with self.store.writing():
                            # looked at again under the lock: another writer may have changed them
                            moved = self._moved_away(doc_id, source)
                            self.store.attach_source(doc_id, source, replaces=moved)
                        report.removed += len(moved)
                        status = "unchanged" if previous == doc_id else "updated" if previous else "added"
                        setattr(report, status, getattr(report, status) + 1)
                        finish(source, status)
                    continue
                tell(source, "reading")
                prepared = self._prepare(path, doc_id)
                pace.set(source, READ_SHARE)
                chunks["total"] += len(prepared.chunks)
            except DocumentError as exc:
                report.failed.append(FileFailure(source, exc.reason))
                finish(source, "failed", exc.reason)
                continue
            except Exception as exc:  # a bug or a parser crash on one file must not stop the rest
                reason = f"unexpected {type(exc).__name__}: {exc}"
                report.failed.append(FileFailure(source, reason))
                finish(source, "failed", reason)
                continue
            if previous:
                updated_sources.add(source)
            batch.append(prepared)
            pending_ids.add(doc_id)
            batch_chunks += len(prepared.chunks)
            if batch_chunks >= self.settings.embedding.batch_size * 4:
                flush()
                pending_ids.clear()
        flush()
        report.removed += self._remove_vanished(paths)
        return report

    def remove(self, ref: str) -> bool:
        """Remove what ``ref`` names; False when nothing (or more than one thing) matches.

        A document id or id prefix removes the whole document, with every file that holds it.
        A source path or file name removes only that file from the knowledge base; the document
        and its chunks go when it was the document's last file (byte-identical copies elsewhere
        keep it)."""
        if self.store.resolve(ref) is None:
            return False
        with self.store.writing():
            found = self.store.resolve(ref)  # again under the lock
            if found is None:
                return False
            kind, key = found
            if kind == "document":
                return self.store.remove_document(key)
            return self.store.remove_source(key)

    # -- steps ------------------------------------------------------------------------------------

    def _moved_away(self, doc_id: str, source: str) -> list[str]:
        """Sources of ``doc_id`` other than ``source`` whose files no longer exist: the file was
        renamed or moved (to ``source`` or elsewhere), so the old path must not be cited."""
        return [s for s in self.store.sources_of(doc_id) if s != source and _file_gone(s)]

    def _read(self, path: Path) -> bytes:
        limit = int(self.settings.ingest.max_file_mb * 1024 * 1024)
        try:
            size = path.stat().st_size
            if size > limit:
                raise FileTooLarge(
                    path, f"{size / 1048576:.1f} MB is above the limit of {self.settings.ingest.max_file_mb:g} MB"
                )
            if not path.is_file():  # reading a FIFO or device would block or never end
                raise UnreadableFile(path, "not a regular file (a pipe, device or socket); only ordinary files are read")
            return path.read_bytes()
        except OSError as exc:
            raise UnreadableFile(path, f"cannot read the file ({exc.strerror or exc})") from exc

    def _prepare(self, path: Path, doc_id: str) -> PreparedDocument:
        limit = int(self.settings.ingest.max_file_mb * 1024 * 1024)
        loaded = load_document(path, max_bytes=limit)
        drafts = split_document(
            loaded,
            self.embedder.count_tokens,
            chunk_tokens=self.settings.chunking.chunk_tokens,
            overlap_tokens=self.settings.chunking.overlap_tokens,
            max_tokens=self.embedder.max_tokens,
        )
        if not drafts:
            raise EmptyDocument(path, "no text to index")
        chunks = [
            NewChunk(
                index=d.index,
                text=d.text,
                page=d.page,
                heading=d.heading,
                tokens=search_tokens(f"{d.heading}\n{d.text}" if d.heading else d.text),
            )
            for d in drafts
        ]
        pages = sum(1 for p in loaded.pages if p.number is not None) or 1
        return PreparedDocument(
            doc_id=doc_id,
            source=str(path),
            title=loaded.title,
            file_type=loaded.file_type,
            pages=pages,
            chunks=chunks,
            title_from_name=_title_from_name(loaded, path),
        )

    def _embed(self, docs: list[PreparedDocument],
               embedded: Callable[[PreparedDocument, float, int], None] | None = None) -> None:
        """Vectors for the chunks of ``docs``, one embedding batch at a time; after each batch
        ``embedded(doc, share of doc's chunks done, chunks in the batch)``."""
        step = max(1, self.settings.embedding.batch_size)
        # Batches run across documents, so many small files still fill each batch.
        items = [(doc, chunk) for doc in docs for chunk in doc.chunks]
        # Embedded in their search form (Unicode NFKC; Traditional text in mainland Simplified
        # script and vocabulary): the embedder matches a question best when both sides are
        # written alike, and questions are folded the same way (bench: Traditional passages).
        texts = [self._embedding_text(doc, chunk) for doc, chunk in items]
        done: dict[int, int] = {}
        for start in range(0, len(items), step):
            part = items[start : start + step]
            for (_, chunk), vector in zip(part, self.embedder.encode_passages(texts[start : start + step])):
                chunk.vector = vector
            if embedded:
                per_doc: dict[int, tuple[PreparedDocument, int]] = {}
                for doc, _ in part:
                    per_doc[id(doc)] = (doc, per_doc.get(id(doc), (doc, 0))[1] + 1)
                for key, (doc, n) in per_doc.items():
                    done[key] = done.get(key, 0) + n
                    embedded(doc, done[key] / len(doc.chunks), n)

    def _embedding_text(self, doc: PreparedDocument, chunk: NewChunk) -> str:
        """What the embedder is given for a chunk: its search form (``ingest.lexical.search_form``;
        the stored text stays as written), with the heading in front when it fits the model and
        says something (a file-name title such as ``report_v2`` does not)."""
        from ingest.lexical import search_form

        heading = chunk.heading.strip().lstrip("#").strip()
        if not heading or heading == Path(doc.source).stem or chunk.text.startswith(heading):
            return search_form(chunk.text)
        text = search_form(f"{heading}\n{chunk.text}")
        if self.embedder.count_tokens(text) <= self.embedder.max_tokens:
            return text
        return search_form(chunk.text)

    def _remove_vanished(self, paths: list[str | Path]) -> int:
        """Sources inside the folders just ingested whose files are gone are removed too."""
        folders = [str(Path(p).expanduser().resolve()) for p in paths if Path(p).expanduser().is_dir()]
        if not folders:
            return 0
        gone = [
            source
            for doc in self.store.documents()
            for source in doc.sources
            if any(source.startswith(f + os.sep) for f in folders) and not Path(source).exists()
        ]
        if not gone:
            return 0
        removed = 0
        with self.store.writing():
            for source in gone:
                if self.store.remove_source(source):
                    removed += 1
        return removed


def _file_gone(path: str) -> bool:
    """True only when ``path`` certainly does not exist (an unreadable folder is not proof)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except (OSError, ValueError):
        return False
    return False


def _title_from_name(loaded, path: Path) -> bool:
    """Whether the loader fell back to the file's stem for the title: such a title follows the
    file when it is renamed. A Markdown heading that happens to equal the stem is the document's
    own title. (For PDF, DOCX and HTML a title from inside that equals the stem cannot be told
    apart from the fallback, and is taken to be the name.)"""
    if loaded.title != path.stem:
        return False
    if loaded.file_type == "markdown":
        heading = re.compile(rf"^ {{0,3}}#{{1,6}}[ \t]+{re.escape(loaded.title)}[ \t#]*$", re.MULTILINE)
        return heading.search(loaded.text) is None
    return True


def print_report(report: IngestReport, stream=sys.stderr) -> None:
    """A short human summary of a run, in the CLIs' language (rag.i18n)."""
    from rag.i18n import cli_text

    print(cli_text(
        "added {added}, updated {updated}, unchanged {unchanged}, removed {removed}, chunks {chunks}, failed {failed}",
        added=report.added, updated=report.updated, unchanged=report.unchanged, removed=report.removed,
        chunks=report.chunks, failed=len(report.failed)), file=stream)
    for failure in report.failed:
        print(cli_text("  failed: {path}: {error}", path=failure.path, error=failure.error), file=stream)
    if report.skipped:
        print(cli_text("  skipped {n} file(s) of unsupported types", n=len(report.skipped)), file=stream)


__all__ = ["Ingestor", "IngestReport", "FileFailure", "Progress", "FINISHED", "discover", "content_id"]
