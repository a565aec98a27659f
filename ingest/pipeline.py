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

Reading and splitting (``ingest.parse_workers``) run in worker processes ahead of the embedder
when the job is big enough (``settings.ingest.parse_workers``): the ingesting process checks each
file's content hash in file order, hands the files that need reading to the workers a bounded
distance ahead, and takes their results back in file order while it embeds and stores, so
reports and progress come in the same order as with in-process reading.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ingest.embeddings import Embedder, load_embedder
from ingest.errors import DocumentError, FileTooLarge, UnreadableFile
from ingest.lexical import search_tokens
from ingest.loaders import SUPPORTED_SUFFIXES
from ingest.parse_workers import ParseOptions, ParsePool, ParseTask, parse_workers_for, prepare_document
from ingest.store import DocumentStore, NewChunk, PreparedDocument
from rag.settings import Settings

HASH_CHARS = 32

FLUSH_BATCHES = 16
"""Chunks are embedded and stored once this many embedding batches' worth are read: enough for
the embedder to batch texts of similar length (less padding), few enough that a crash or an
error costs one short stretch of work."""

AHEAD_FILES = 64
AHEAD_BYTES = 16 * 1024 * 1024
"""With reader processes, files are handed out at most this many (and, but for one, this many
bytes) ahead of the one being stored: enough for the workers to read the next embedding batch
while the current one is embedded, while bounding the parsed documents waiting in memory (a
text file's chunks and search tokens take ~17 times its size)."""


@dataclass
class FileFailure:
    path: str
    error: str


@dataclass
class FileWarning:
    """A file that was stored, but read only in part: ``warning`` says what is missing (a PDF
    page whose OCR failed, pages skipped because OCR is not available)."""

    path: str
    warning: str


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
    warnings: list[FileWarning] = field(default_factory=list)
    """What files added or updated in this run lack (one entry per warning, in file order);
    such a file still counts as added or updated."""

    def to_dict(self) -> dict:
        """The CLI's ``--json`` object; ``warnings`` (``[{"path", "warning"}]``) only when a file
        was read in part, so that the object keeps its keys otherwise."""
        data = asdict(self)
        data.pop("skipped")
        if not data["warnings"]:
            data.pop("warnings")
        return data

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class Progress:
    """How far along a run is. Sent when a file starts being read (``status="reading"``; with
    reader processes: when its turn comes, as they may have read it ahead), as OCR of each
    page of a scanned PDF begins (``"ocr"``, with :attr:`page` of :attr:`pages`, the pages that
    need OCR; pages OCR'd ahead by reader processes are told at the file's turn), after each
    slice of chunks is embedded (``"embedding"``) and when a file is finished (``added``,
    ``updated``, ``unchanged`` or ``failed``; then :attr:`finished` is true).

    ``done``/``total`` count files; ``chunks_done``/``chunks_total`` the chunks embedded so far
    and those read so far (the total grows as files are read). ``fraction`` (0..1) weighs files
    by size, reading as a fifth of a file's work and embedding as the rest; ``eta_s`` is the
    time left at the pace so far (None until there is a pace to go by)."""

    path: str
    status: str  # reading | ocr | embedding | added | updated | unchanged | failed
    done: int
    total: int
    error: str | None = None
    chunks_done: int = 0
    chunks_total: int = 0
    fraction: float = 0.0
    eta_s: float | None = None
    page: int = 0
    """With ``status="ocr"``: the page being OCR'd, 1-based among the file's :attr:`pages`."""
    pages: int = 0
    """With ``status="ocr"``: how many of the file's pages need OCR (no usable text layer)."""

    @property
    def finished(self) -> bool:
        """True when ``path`` is finished (one such event per file)."""
        return self.status in FINISHED


FINISHED = frozenset({"added", "updated", "unchanged", "failed"})
READ_SHARE = 0.2
"""Share of a file's work that reading and splitting stand for in ``Progress.fraction``."""
OCR_READ_SHARE = 0.8
"""The same for a file with pages to OCR (seconds a page: far more than embedding its text)."""


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
        self.read_share: dict[str, float] = {}  # source → share of its work that reading is
        self.started = time.monotonic()

    def reading(self, source: str) -> float:
        return self.read_share.get(source, READ_SHARE)

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


@dataclass
class _Item:
    """A file of a run: its name and content hash (or what went wrong getting them), and its
    task when it was handed to the reader processes ahead of its turn."""

    path: Path
    source: str
    doc_id: str = ""
    size: int = 0
    error: Exception | None = None
    task: ParseTask | None = None


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

        def tell(path: str, status: str, error: str | None = None, page: int = 0, pages: int = 0) -> None:
            if progress:
                progress(Progress(path, status, done, total, error, chunks["done"], chunks["total"],
                                  pace.fraction(), pace.eta(), page, pages))

        def ocr_page(path: str, page: int, pages: int) -> None:
            pace.read_share[path] = OCR_READ_SHARE
            pace.set(path, OCR_READ_SHARE * (page - 1) / max(pages, 1))
            tell(path, "ocr", page=page, pages=pages)

        def finish(path: str, status: str, error: str | None = None) -> None:
            nonlocal done
            done += 1
            pace.set(path, 1.0)
            tell(path, status, error)

        def embedded(doc: PreparedDocument, share: float, n: int) -> None:
            chunks["done"] += n
            read = pace.reading(doc.source)
            pace.set(doc.source, read + (1 - read) * share)
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
                report.warnings.extend(FileWarning(doc.source, w) for w in doc.warnings)
                finish(doc.source, status)
            batch, batch_chunks = [], 0

        updated_sources: set[str] = set()
        pending_ids: set[str] = set()
        pool = self._parse_pool(list(pace.size.values()))
        try:
            for item in self._checked(files, pool):
                source = item.source
                try:
                    if item.error is not None:
                        raise item.error
                    doc_id = item.doc_id
                    previous = self.store.doc_for_source(source)
                    if self.store.is_complete(doc_id) or doc_id in pending_ids:
                        if item.task is not None:
                            pool.discard(item.task)
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
                    prepared = self._prepared(item, pool, lambda page, pages: ocr_page(source, page, pages))
                    pace.set(source, pace.reading(source))
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
                if batch_chunks >= self.settings.embedding.batch_size * FLUSH_BATCHES:
                    flush()
                    pending_ids.clear()
            flush()
        finally:
            if pool is not None:
                pool.close()
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

    def _check(self, path: Path) -> _Item:
        """The file's name and content hash; a problem is kept to be reported at its turn."""
        item = _Item(path, str(path))
        try:
            if not _storable(item.source):
                item.source = printable_path(item.source)
                raise UnreadableFile(
                    item.source,
                    "the file name is not valid UTF-8 (perhaps from a zip made on another "
                    "system); rename the file and add it again",
                )
            data = self._read(path)
            item.doc_id, item.size = content_id(data), len(data)
        except Exception as exc:
            item.error = exc
        return item

    def _checked(self, files: list[Path], pool: ParsePool | None) -> Iterator[_Item]:
        """``files`` checked (:meth:`_check`), in order. Without a pool each is checked at its
        turn. With one, files are checked up to AHEAD_FILES / AHEAD_BYTES ahead and those whose
        content is not stored yet are handed to the workers, so that they are read while the
        ingesting process embeds; the hash check stays here, so unchanged files cost no parsing."""
        ahead: deque[_Item] = deque()
        sent: set[str] = set()  # content handed out in this run: a later copy is not read again
        sent_bytes = 0
        rest = iter(files)
        while True:
            while not ahead or (pool is not None and len(ahead) < AHEAD_FILES and sent_bytes < AHEAD_BYTES):
                path = next(rest, None)
                if path is None:
                    break
                item = self._check(path)
                if (pool is not None and item.error is None and item.doc_id not in sent
                        and not self.store.is_complete(item.doc_id)):
                    item.task = pool.submit(path, item.doc_id)
                    sent.add(item.doc_id)
                    sent_bytes += item.size
                ahead.append(item)
            if not ahead:
                return
            item = ahead.popleft()
            if item.task is not None:
                sent_bytes -= item.size
            yield item

    def _parse_pool(self, sizes: list[int]) -> ParsePool | None:
        """Reader processes for this job, or None to read in this process (see
        ``ingest.parse_workers.parse_workers_for``; the pool starts with the first file sent)."""
        workers = parse_workers_for(self.settings.ingest.parse_workers, sizes)
        if not workers:
            return None
        try:
            # The embedder's token counter, made to be sent to other processes (None: it cannot).
            make_counter = getattr(self.embedder, "token_counter", None)
            counter = make_counter() if callable(make_counter) else None
            if counter is None:
                return None
            pickle.dumps((counter, search_tokens))
        except Exception:  # not picklable after all, or no counter to be had: read here
            return None
        return ParsePool(workers, counter, search_tokens, self._parse_options(), inline=self._prepare)

    def _parse_options(self) -> ParseOptions:
        return ParseOptions(
            max_bytes=int(self.settings.ingest.max_file_mb * 1024 * 1024),
            chunk_tokens=self.settings.chunking.chunk_tokens,
            overlap_tokens=self.settings.chunking.overlap_tokens,
            max_tokens=self.embedder.max_tokens,
        )

    def _prepared(self, item: _Item, pool: ParsePool | None,
                  on_page: Callable[[int, int], None] | None = None) -> PreparedDocument:
        """The file read and split: by the workers when there are some (a file not handed out
        ahead, such as a second copy of content that failed, is handed out now), else here.
        ``on_page(n, total)`` as OCR of the n-th of a scanned PDF's ``total`` pages begins
        (from the workers: forwarded while this process waits for the file)."""
        if pool is None:
            return self._prepare(item.path, item.doc_id, on_page)
        return pool.result(item.task or pool.submit(item.path, item.doc_id), on_page)

    def _prepare(self, path: Path, doc_id: str, on_page: Callable[[int, int], None] | None = None) -> PreparedDocument:
        return prepare_document(path, doc_id, self.embedder.count_tokens, self._parse_options(), search_tokens,
                                on_page)

    def _embed(self, docs: list[PreparedDocument],
               embedded: Callable[[PreparedDocument, float, int], None] | None = None) -> None:
        """Vectors for the chunks of ``docs``, one embedding batch at a time; after each batch
        ``embedded(doc, share of doc's chunks done, chunks in the batch)``."""
        step = max(1, self.settings.embedding.batch_size)
        # Batches run across documents, so small files fill them too.
        items = [(doc, chunk) for doc in docs for chunk in doc.chunks]
        # Embedded in their search form (Unicode NFKC; Traditional text in mainland Simplified
        # script and vocabulary): the embedder matches a question best when both sides are
        # written alike, and questions are folded the same way (bench: Traditional passages).
        texts = [self._embedding_text(doc, chunk) for doc, chunk in items]
        # Texts of similar length batched together: an embedder that pads (PyTorch) pads each
        # batch to its longest text (bench/ingest.py: pipeline ÷ raw encode 1.29 → 1.16).
        order = sorted(range(len(items)), key=lambda i: len(texts[i]))
        items, texts = [items[i] for i in order], [texts[i] for i in order]
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


def print_report(report: IngestReport, stream=None) -> None:
    """A short human summary of a run, in the CLIs' language (rag.i18n), on ``stream`` (default:
    ``sys.stderr`` as it is when called); files read only in part are listed with what they lack."""
    from rag.i18n import cli_text

    stream = stream or sys.stderr

    print(cli_text(
        "added {added}, updated {updated}, unchanged {unchanged}, removed {removed}, chunks {chunks}, failed {failed}",
        added=report.added, updated=report.updated, unchanged=report.unchanged, removed=report.removed,
        chunks=report.chunks, failed=len(report.failed)), file=stream)
    for failure in report.failed:
        print(cli_text("  failed: {path}: {error}", path=failure.path, error=failure.error), file=stream)
    for warning in report.warnings:
        print(cli_text("  warning: {path}: {warning}", path=warning.path, warning=warning.warning), file=stream)
    if report.skipped:
        print(cli_text("  skipped {n} file(s) of unsupported types", n=len(report.skipped)), file=stream)


__all__ = ["Ingestor", "IngestReport", "FileFailure", "FileWarning", "Progress", "FINISHED", "discover", "content_id"]
