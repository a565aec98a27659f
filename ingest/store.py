"""The knowledge base on disk: Chroma vectors plus a SQLite catalogue that is the source of truth.

Usage::

    from rag.settings import Settings
    from ingest.embeddings import load_embedder
    from ingest.store import DocumentStore

    settings = Settings()
    store = DocumentStore.open(settings, load_embedder(settings.embedding))
    for doc in store.documents():
        print(doc.title, doc.chunk_count, doc.sources)
    hits = store.dense_search(store.embedder.embed_query("问题"), k=5)   # [(chunk_id, similarity)]

Why a catalogue next to Chroma: a document only counts once its catalogue row says ``complete``,
which is written after all its vectors are in Chroma. Anything a killed process left behind
(``pending`` or ``deleting`` rows and their vectors) is removed by the next writer, and readers
never return chunks of a document that is not complete. The catalogue also keeps each chunk's
text and search tokens, so the BM25 index and the UI never need to scan Chroma.

Names: one document (one content) may be held by several files, its *sources*. A document stays
while any source holds it: removing a source forgets that path only, and the document and its
chunks go with its last source. The first source added (the *primary*, first in
``DocumentInfo.sources``) is the one chunks are cited under, and a title that was taken from a
file name follows the primary source's name. Names are kept in the catalogue only, so a rename
never rewrites vectors: Chroma's metadata holds what the content fixes (document id, chunk
index, page); name fields that older versions wrote there are not read.

Chroma runs embedded under ``store.dir`` or, when ``store.chroma_host`` is set, as a server;
the catalogue always lives in ``store.dir``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from filelock import FileLock, Timeout

from ingest.errors import EmbedderMismatch, StoreBusy, StoreError
from rag.settings import Settings

CATALOG_FILE = "catalog.sqlite3"
CHROMA_DIR = "chroma"
LOCK_FILE = "write.lock"
SCHEMA_VERSION = 3
INDEX_VERSION = 4
"""What loaders, splitter and search forms make of a file. Each document records the version it
was indexed with; bump this when they change what is stored (1: before faithful text of issue
11, i.e. DOCX text boxes/numbering/notes, NFKC and regional search forms, figure-safe chunks;
2: before reference lists and repeated text were marked, ingest.chunk_kinds; 3: before abstracts in
the other language were),
and documents indexed earlier are listed by :meth:`DocumentStore.outdated_documents` until a
rebuild re-indexes them."""

PENDING, COMPLETE, DELETING = "pending", "complete", "deleting"

_CHROMA_OPEN_LOCK = threading.Lock()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    file_type TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    char_count INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'deleting')),
    added_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    named_title INTEGER,
    index_version INTEGER
);
CREATE TABLE IF NOT EXISTS sources (
    path TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    file_name TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sources_doc ON sources(doc_id);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    doc_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    page INTEGER,
    heading TEXT NOT NULL,
    text TEXT NOT NULL,
    tokens TEXT NOT NULL,
    kind TEXT,
    boxes TEXT,
    ocr INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
"""
# chunks.kind: ingest.chunk_kinds (body, references, repeated); NULL (body) before schema 3.
# chunks.boxes: JSON [[page, x0, top, x1, bottom], ...] of a PDF chunk's lines (PDF points, origin
# top-left; ingest.passage_boxes); NULL when unknown (not a PDF, or before schema 3).
# chunks.ocr: 1 when the chunk's page was read by OCR (ingest.ocr); NULL otherwise.
# documents.named_title: 1 when the title is the primary source's file stem (it follows renames),
# 0 when it came from inside the document, NULL in catalogues written before schema 2.


def _boxes(stored: str | None) -> list:
    """The ``chunks.boxes`` column as ``[(page, (x0, top, x1, bottom)), ...]``."""
    if not stored:
        return []
    try:
        return [(int(b[0]), tuple(float(v) for v in b[1:5])) for b in json.loads(stored)]
    except (ValueError, TypeError, IndexError):
        return []  # a damaged value only loses the highlight


def _id_batches(ids: list[str], size: int = 500):
    """``(ids, "?,?,…")`` in batches that stay under SQLite's limit on query parameters."""
    for start in range(0, len(ids), size):
        part = ids[start : start + size]
        yield part, ",".join("?" * len(part))


def chunk_id_for(doc_id: str, index: int) -> str:
    """Chunk ids depend only on content, so a re-ingest after a crash writes the same ids."""
    return f"{doc_id}-{index:05d}"


@dataclass
class DocumentInfo:
    doc_id: str
    title: str
    file_type: str
    pages: int
    chunk_count: int
    char_count: int
    added_at: float
    updated_at: float
    sources: list[str] = field(default_factory=list)

    @property
    def file_names(self) -> list[str]:
        return [Path(p).name for p in self.sources]


@dataclass
class ChunkRecord:
    chunk_id: str
    doc_id: str
    index: int
    page: int | None
    heading: str
    text: str
    title: str
    source: str
    boxes: list = field(default_factory=list)
    """``(page, (x0, top, x1, bottom))`` of a PDF chunk's lines, [] when unknown."""
    ocr: bool = False
    """The chunk's page was read by OCR."""

    @property
    def file_name(self) -> str:
        return Path(self.source).name


@dataclass
class NewChunk:
    """A chunk ready to store: text, where it came from, its vector and search tokens."""

    index: int
    text: str
    page: int | None
    heading: str
    tokens: list[str]
    vector: np.ndarray | None = None
    kind: str = "body"
    """ingest.chunk_kinds: body, references or repeated."""
    boxes: list = field(default_factory=list)
    """``(page, (x0, top, x1, bottom))`` of a PDF chunk's lines (ingest.passage_boxes)."""
    ocr: bool = False
    """The chunk's page was read by OCR."""


@dataclass
class PreparedDocument:
    """A loaded, split and embedded document, ready for ``DocumentStore.put_documents``."""

    doc_id: str
    source: str
    title: str
    file_type: str
    pages: int
    chunks: list[NewChunk]
    title_from_name: bool | None = None
    """Whether ``title`` is the file's stem rather than something the document says (a Markdown
    heading, PDF metadata); None: decide by comparing the title with the source's stem."""
    warnings: list[str] = field(default_factory=list)
    """What the loader could read only in part (``LoadedDocument.warnings``: a PDF page whose OCR
    failed, pages skipped because OCR is not available); the file itself is stored."""


class DocumentStore:
    """Chroma collection + catalogue for one knowledge base directory."""

    def __init__(self, settings: Settings, embedder) -> None:
        self.settings = settings
        self.embedder = embedder
        self.dir = Path(settings.store.dir).expanduser().resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = FileLock(str(self.dir / LOCK_FILE))
        self._init_catalog()
        self._check_embedder()
        self._chroma_lock = threading.Lock()
        self._collection = None
        self._collection_generation = -1

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, embedder) -> "DocumentStore":
        return cls(settings, embedder)

    def _db(self) -> sqlite3.Connection:
        # One connection per thread: Streamlit and the CLIs read from worker threads.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.dir / CATALOG_FILE, timeout=60, isolation_level=None)
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _init_catalog(self) -> None:
        db = self._db()
        db.executescript(_SCHEMA)
        with self._transaction() as tx:
            # Schema 1 had no named_title; add it (under the transaction's lock, so two processes
            # opening an old catalogue at once do not both try).
            columns = {row[1] for row in tx.execute("PRAGMA table_info(documents)")}
            if "named_title" not in columns:
                tx.execute("ALTER TABLE documents ADD COLUMN named_title INTEGER")
            if "index_version" not in columns:  # NULL: indexed before versions were recorded (1)
                tx.execute("ALTER TABLE documents ADD COLUMN index_version INTEGER")
            chunk_columns = {row[1] for row in tx.execute("PRAGMA table_info(chunks)")}
            for column, kind in (("kind", "TEXT"), ("boxes", "TEXT"), ("ocr", "INTEGER")):
                if column not in chunk_columns:
                    tx.execute(f"ALTER TABLE chunks ADD COLUMN {column} {kind}")
            tx.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            tx.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version' AND CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )
            tx.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            tx.execute(
                "INSERT OR IGNORE INTO meta VALUES ('embedder', ?)",
                (json.dumps(self.embedder.signature, sort_keys=True),),
            )
            collection = self.settings.store.collection
            if self.settings.store.chroma_host:
                # Several knowledge bases may share one server: give each its own collection.
                collection = f"{collection}-{uuid.uuid4().hex[:12]}"
            tx.execute("INSERT OR IGNORE INTO meta VALUES ('collection', ?)", (collection,))

    def _meta(self, key: str) -> str:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    def _check_embedder(self) -> None:
        built_with = json.loads(self._meta("embedder"))
        if built_with != self.embedder.signature:
            raise EmbedderMismatch(
                f"The knowledge base at {self.dir} was built with embedder {built_with['embedder']} "
                f"(dimension {built_with['dimension']}), but the configured embedder is "
                f"{self.embedder.name} (dimension {self.embedder.dimension}). Vectors from two "
                f"models cannot be mixed: set DOCQA_EMBEDDING__MODEL to the original model, or "
                f"ingest into a new knowledge base directory."
            )

    @property
    def collection_name(self) -> str:
        return self._meta("collection")

    @property
    def generation(self) -> int:
        """Bumped by every committed change; readers use it to refresh their caches."""
        return int(self._meta("generation"))

    # -- Chroma ------------------------------------------------------------------------------------

    def _new_client(self):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if self.settings.store.chroma_host:
            return chromadb.HttpClient(
                host=self.settings.store.chroma_host,
                port=self.settings.store.chroma_port,
                settings=chroma_settings,
            )
        path = self.dir / CHROMA_DIR
        # An embedded Chroma client keeps its vector index in memory and does not see vectors
        # that another process adds later; forget the cached system so we read the files anew.
        _forget_cached_client(path)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)

    def collection(self):
        """The Chroma collection, reopened when another process has changed the store."""
        generation = self.generation
        with self._chroma_lock:
            if self._collection is None or (
                generation != self._collection_generation and not self.settings.store.chroma_host
            ):
                try:
                    # Chroma's embedded-client cache is process-wide and _new_client replaces
                    # its entry; two threads (two stores, or Streamlit sessions) doing that at
                    # once got a half-started system ("'RustBindingsAPI' object has no
                    # attribute 'bindings'") or a KeyError. One opening at a time per process.
                    with _CHROMA_OPEN_LOCK:
                        client = self._new_client()
                        self._collection = client.get_or_create_collection(
                            self.collection_name,
                            metadata=dict(self.embedder.signature),
                            configuration={"hnsw": {"space": "cosine"}},
                            embedding_function=None,
                        )
                except Exception as exc:
                    where = (
                        f"Chroma server {self.settings.store.chroma_host}:{self.settings.store.chroma_port}"
                        if self.settings.store.chroma_host
                        else f"{self.dir / CHROMA_DIR}"
                    )
                    raise StoreError(f"Cannot open the vector store at {where}: {exc}") from exc
                self._collection_generation = generation
            return self._collection

    def _mark_seen(self, generation: int) -> None:
        # Our own writes are already in our client; no need to reopen for them.
        with self._chroma_lock:
            self._collection_generation = generation

    # -- reads ---------------------------------------------------------------------------------------

    def documents(self) -> list[DocumentInfo]:
        db = self._db()
        rows = db.execute(
            "SELECT doc_id, title, file_type, pages, chunk_count, char_count, added_at, updated_at "
            "FROM documents WHERE state = 'complete' ORDER BY added_at, doc_id"
        ).fetchall()
        sources: dict[str, list[str]] = {}
        for path, doc_id in db.execute("SELECT path, doc_id FROM sources ORDER BY added_at, path"):
            sources.setdefault(doc_id, []).append(path)
        return [DocumentInfo(*row, sources=sources.get(row[0], [])) for row in rows]

    def outdated_ids(self) -> set[str]:
        """Ids of documents indexed with an older INDEX_VERSION: a rebuild makes them findable
        the current ways (their stored text, tokens and vectors come from older loaders)."""
        return {row[0] for row in self._db().execute(
            "SELECT doc_id FROM documents WHERE state = 'complete' AND COALESCE(index_version, 1) < ?",
            (INDEX_VERSION,))}

    def outdated_documents(self) -> list[DocumentInfo]:
        """The documents of :meth:`outdated_ids`."""
        old = self.outdated_ids()
        return [d for d in self.documents() if d.doc_id in old] if old else []

    def document(self, doc_id: str) -> DocumentInfo | None:
        return next((d for d in self.documents() if d.doc_id == doc_id), None)

    def find(self, ref: str) -> DocumentInfo | None:
        """A document by id, id prefix, source path or file name."""
        docs = self.documents()
        resolved = str(Path(ref).expanduser().resolve()) if ref else ref
        for doc in docs:
            if doc.doc_id == ref or resolved in doc.sources:
                return doc
        matches = [d for d in docs if d.doc_id.startswith(ref) or ref in d.file_names]
        return matches[0] if len(matches) == 1 else None

    def resolve(self, ref: str) -> tuple[str, str] | None:
        """What ``ref`` names when removing: ``("document", doc_id)`` for a document id or id
        prefix, ``("source", path)`` for a stored source path or a file name. None when nothing
        matches, or when a prefix or file name fits more than one document or source."""
        if not ref:
            return None
        if self.is_complete(ref):
            return ("document", ref)
        db = self._db()
        paths = {ref}
        try:
            paths.add(str(Path(ref).expanduser().resolve()))
        except (OSError, ValueError, RuntimeError):
            pass
        marks = ",".join("?" * len(paths))
        row = db.execute(
            "SELECT s.path FROM sources s JOIN documents d ON s.doc_id = d.doc_id "
            f"WHERE d.state = 'complete' AND s.path IN ({marks}) LIMIT 1",
            sorted(paths),
        ).fetchone()
        if row:
            return ("source", row[0])
        found = [
            ("document", r[0])
            for r in db.execute(
                "SELECT doc_id FROM documents WHERE state = 'complete' AND substr(doc_id, 1, ?) = ?",
                (len(ref), ref),
            )
        ]
        found += [
            ("source", r[0])
            for r in db.execute(
                "SELECT s.path FROM sources s JOIN documents d ON s.doc_id = d.doc_id "
                "WHERE d.state = 'complete' AND s.file_name = ?",
                (ref,),
            )
        ]
        return found[0] if len(found) == 1 else None

    def sources_of(self, doc_id: str) -> list[str]:
        """The source paths of one document, primary first."""
        return [
            r[0]
            for r in self._db().execute(
                "SELECT path FROM sources WHERE doc_id = ? ORDER BY added_at, path", (doc_id,)
            )
        ]

    def doc_for_source(self, path: str) -> str | None:
        row = self._db().execute("SELECT doc_id FROM sources WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def is_complete(self, doc_id: str) -> bool:
        row = self._db().execute("SELECT state FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return bool(row) and row[0] == COMPLETE

    def complete_doc_ids(self) -> set[str]:
        return {r[0] for r in self._db().execute("SELECT doc_id FROM documents WHERE state = 'complete'")}

    def chunk_count(self) -> int:
        row = self._db().execute(
            "SELECT COUNT(*) FROM chunks c JOIN documents d ON c.doc_id = d.doc_id WHERE d.state = 'complete'"
        ).fetchone()
        return int(row[0])

    def chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks of complete documents, in the order asked; unknown ids are left out."""
        if not chunk_ids:
            return []
        db = self._db()
        found: dict[str, ChunkRecord] = {}
        ids = list(chunk_ids)
        for part, marks in _id_batches(ids):
            for row in db.execute(
                "SELECT c.chunk_id, c.doc_id, c.idx, c.page, c.heading, c.text, d.title, "
                "(SELECT path FROM sources s WHERE s.doc_id = c.doc_id ORDER BY added_at, path LIMIT 1), c.boxes, c.ocr "
                f"FROM chunks c JOIN documents d ON c.doc_id = d.doc_id "
                f"WHERE d.state = 'complete' AND c.chunk_id IN ({marks})",
                part,
            ):
                found[row[0]] = ChunkRecord(*row[:7], source=row[7] or "", boxes=_boxes(row[8]),
                                            ocr=bool(row[9]))
        return [found[i] for i in ids if i in found]

    def document_chunks(self, doc_id: str) -> list[ChunkRecord]:
        ids = [
            r[0]
            for r in self._db().execute(
                "SELECT chunk_id FROM chunks WHERE doc_id = ? ORDER BY idx", (doc_id,)
            )
        ]
        return self.chunks(ids)

    def marked_kinds(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        """The kind of those of ``chunk_ids`` that are not body text (ingest.chunk_kinds)."""
        db = self._db()
        found: dict[str, str] = {}
        for part, marks in _id_batches(list(chunk_ids)):
            found.update(db.execute(
                f"SELECT chunk_id, kind FROM chunks WHERE chunk_id IN ({marks}) AND kind IS NOT NULL "
                "AND kind != 'body'", part,
            ).fetchall())
        return found

    def lexical_rows(self) -> list[tuple[str, str, str]]:
        """``(chunk_id, doc_id, space-joined search tokens)`` of every complete chunk."""
        return self._db().execute(
            "SELECT c.chunk_id, c.doc_id, c.tokens FROM chunks c JOIN documents d "
            "ON c.doc_id = d.doc_id WHERE d.state = 'complete' ORDER BY c.chunk_id"
        ).fetchall()

    def dense_search(
        self, vector: Sequence[float], k: int, doc_ids: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """Nearest chunks by cosine similarity (-1..1, higher is closer), complete documents only."""
        complete = self.complete_doc_ids()
        allowed = complete if doc_ids is None else complete & set(doc_ids)
        if not allowed or k <= 0:
            return []
        collection = self.collection()
        where = None
        if doc_ids is not None:
            where = {"doc_id": {"$in": sorted(allowed)}} if len(allowed) > 1 else {"doc_id": next(iter(allowed))}
        total = max(collection.count(), 1)
        # Ask for more than k: vectors of a document still being written are skipped, and a
        # large one could crowd out the rest, so widen the search until k hits are found.
        n = min(k + 16, total)
        while True:
            result = collection.query(
                query_embeddings=[list(map(float, vector))],
                n_results=n,
                where=where,
                include=["distances", "metadatas"],
            )
            hits = [
                (chunk_id, 1.0 - float(distance))
                for chunk_id, distance, meta in zip(
                    result["ids"][0], result["distances"][0], result["metadatas"][0]
                )
                if meta and meta.get("doc_id") in allowed
            ]
            if len(hits) >= k or n >= total or len(result["ids"][0]) < n:
                return hits[:k]
            n = min(n * 4, total)

    # -- writes --------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator["DocumentStore"]:
        """Hold the single-writer lock; finish any interrupted work of a killed writer first."""
        timeout = self.settings.store.lock_timeout_s
        try:
            self._write_lock.acquire(timeout=timeout)
        except Timeout:
            raise StoreBusy(
                f"The knowledge base at {self.dir} is busy: another process has been writing to it "
                f"for more than {timeout:.0f} s. Try again when it has finished."
            ) from None
        try:
            self.recover()
            yield self
        finally:
            self._write_lock.release()

    def has_leftovers(self) -> bool:
        """Whether an interrupted writer left documents that are not complete."""
        row = self._db().execute("SELECT 1 FROM documents WHERE state != 'complete' LIMIT 1").fetchone()
        return row is not None

    def recover(self) -> int:
        """Delete what interrupted writes left: documents not complete and their vectors."""
        stale = [
            r[0]
            for r in self._db().execute("SELECT doc_id FROM documents WHERE state != 'complete'")
        ]
        for doc_id in stale:
            self._purge(doc_id)
        return len(stale)

    def _purge(self, doc_id: str) -> None:
        """Remove a document's vectors, then its catalogue rows (in that order, so a crash in
        between leaves a row that the next ``recover`` finds)."""
        self.collection().delete(where={"doc_id": doc_id})
        with self._transaction() as tx:
            tx.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            tx.execute("DELETE FROM sources WHERE doc_id = ?", (doc_id,))
            tx.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def _bump_generation(self, tx: sqlite3.Connection) -> int:
        tx.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        return int(tx.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def put_documents(self, docs: Sequence["PreparedDocument"]) -> set[str]:
        """Store new documents' chunks and point each one's source at it. Call inside ``writing()``.

        Steps, each safe to interrupt: (1) catalogue rows as ``pending``; (2) vectors into Chroma;
        (3) one transaction per document marks it complete, moves its source to it and marks a
        document left with no source as ``deleting``; (4) that document's vectors are removed.
        Several documents go through each step together, so small files are written in batches.

        A document that is already complete (another writer stored the same content after this
        one checked) only gets its source attached: rewriting it would make it pending again,
        and a crash then would delete a document that was safely stored. Returns the ids of the
        documents whose chunks were written.
        """
        done = [doc for doc in docs if self.is_complete(doc.doc_id)]
        docs = [doc for doc in docs if not self.is_complete(doc.doc_id)]
        for doc in done:
            self.attach_source(doc.doc_id, doc.source)
        now = time.time()
        with self._transaction() as tx:
            for doc in docs:
                named = doc.title_from_name
                if named is None:
                    named = doc.title == Path(doc.source).stem
                tx.execute(
                    "INSERT OR REPLACE INTO documents (doc_id, title, file_type, pages, chunk_count, "
                    "char_count, state, added_at, updated_at, named_title, index_version) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
                    (doc.doc_id, doc.title, doc.file_type, doc.pages, len(doc.chunks),
                     sum(len(c.text) for c in doc.chunks), now, now, int(named), INDEX_VERSION),
                )
                tx.execute("DELETE FROM chunks WHERE doc_id = ?", (doc.doc_id,))
                tx.executemany(
                    "INSERT INTO chunks (chunk_id, doc_id, idx, page, heading, text, tokens, kind, boxes, ocr) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (chunk_id_for(doc.doc_id, c.index), doc.doc_id, c.index, c.page, c.heading,
                         c.text, " ".join(c.tokens), c.kind,
                         json.dumps([[p, *b] for p, b in c.boxes]) if c.boxes else None, 1 if c.ocr else None)
                        for c in doc.chunks
                    ],
                )
        rows = [(doc, c) for doc in docs for c in doc.chunks]
        collection = self.collection()
        for start in range(0, len(rows), 1000):
            part = rows[start : start + 1000]
            collection.upsert(
                ids=[chunk_id_for(doc.doc_id, c.index) for doc, c in part],
                embeddings=np.stack([c.vector for _, c in part]).astype(np.float32),
                metadatas=[_chroma_metadata(doc.doc_id, c) for doc, c in part],
            )
        for doc in docs:
            self.attach_source(doc.doc_id, doc.source, complete=True)
        return {doc.doc_id for doc in docs}

    def attach_source(
        self, doc_id: str, source: str, complete: bool = False, replaces: Sequence[str] = ()
    ) -> None:
        """Point ``source`` at ``doc_id`` (already stored); drop a document left with no source.

        ``replaces``: other sources of ``doc_id`` that ``source`` takes the place of (the file
        was renamed or moved); they are forgotten in the same transaction, and ``source`` takes
        their place in the order of sources, so it is cited as they were. A source that already
        points at ``doc_id`` keeps its place.
        """
        now = time.time()
        with self._transaction() as tx:
            if complete:
                tx.execute("UPDATE documents SET state = 'complete', updated_at = ? WHERE doc_id = ?", (now, doc_id))
            previous = tx.execute("SELECT doc_id, added_at FROM sources WHERE path = ?", (source,)).fetchone()
            primaries = {doc_id: self._primary(tx, doc_id)}
            if previous and previous[0] != doc_id:
                primaries[previous[0]] = self._primary(tx, previous[0])
            places = [previous[1]] if previous and previous[0] == doc_id else []
            for old in replaces:
                row = tx.execute(
                    "SELECT added_at FROM sources WHERE path = ? AND doc_id = ?", (old, doc_id)
                ).fetchone()
                if row and old != source:
                    tx.execute("DELETE FROM sources WHERE path = ?", (old,))
                    places.append(row[0])
            tx.execute(
                "INSERT OR REPLACE INTO sources VALUES (?, ?, ?, ?)",
                (source, doc_id, Path(source).name, min(places, default=now)),
            )
            orphan = self._orphan_after_move(tx, previous[0] if previous else None, doc_id)
            for doc, primary in primaries.items():
                if doc != orphan:
                    self._follow_name(tx, doc, primary)
            generation = self._bump_generation(tx)
        self._mark_seen(generation)
        if orphan:
            self._purge(orphan)

    @staticmethod
    def _primary(tx: sqlite3.Connection, doc_id: str) -> str | None:
        row = tx.execute(
            "SELECT path FROM sources WHERE doc_id = ? ORDER BY added_at, path LIMIT 1", (doc_id,)
        ).fetchone()
        return row[0] if row else None

    def _follow_name(self, tx: sqlite3.Connection, doc_id: str, old_primary: str | None) -> None:
        """After ``doc_id``'s sources changed: when its primary source is another file now and
        its title was that of the old primary's file name, take the new primary's stem as title
        (and as the heading of chunks that had the old title as theirs). A title that came from
        the document itself stays."""
        new_primary = self._primary(tx, doc_id)
        if new_primary is None or new_primary == old_primary:
            return
        row = tx.execute("SELECT title, named_title FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        if row is None:
            return
        title, named = row
        if named is None:  # a catalogue from before schema 2: judge by the old primary's name
            named = old_primary is not None and title == Path(old_primary).stem
            tx.execute("UPDATE documents SET named_title = ? WHERE doc_id = ?", (int(named), doc_id))
        new_title = Path(new_primary).stem
        if not named or new_title == title:
            return
        tx.execute("UPDATE chunks SET heading = ? WHERE doc_id = ? AND heading = ?", (new_title, doc_id, title))
        tx.execute("UPDATE documents SET title = ? WHERE doc_id = ?", (new_title, doc_id))

    @staticmethod
    def _orphan_after_move(tx: sqlite3.Connection, old_doc: str | None, new_doc: str) -> str | None:
        if old_doc is None or old_doc == new_doc:
            return None
        left = tx.execute("SELECT COUNT(*) FROM sources WHERE doc_id = ?", (old_doc,)).fetchone()[0]
        if left:
            return None
        tx.execute("UPDATE documents SET state = 'deleting' WHERE doc_id = ?", (old_doc,))
        return old_doc

    def remove_source(self, source: str) -> bool:
        """Forget one file name; the document goes when no name is left. Call inside ``writing()``."""
        with self._transaction() as tx:
            row = tx.execute("SELECT doc_id FROM sources WHERE path = ?", (source,)).fetchone()
            if not row:
                return False
            primary = self._primary(tx, row[0])
            tx.execute("DELETE FROM sources WHERE path = ?", (source,))
            orphan = self._orphan_after_move(tx, row[0], "")
            if orphan is None:
                self._follow_name(tx, row[0], primary)
            generation = self._bump_generation(tx)
        self._mark_seen(generation)
        if orphan:
            self._purge(orphan)
        return True

    def remove_document(self, doc_id: str) -> bool:
        """Remove a document with all its names and chunks. Call inside ``writing()``."""
        with self._transaction() as tx:
            changed = tx.execute(
                "UPDATE documents SET state = 'deleting' WHERE doc_id = ? AND state = 'complete'", (doc_id,)
            ).rowcount
            generation = self._bump_generation(tx)
        self._mark_seen(generation)
        if changed:
            self._purge(doc_id)
        return bool(changed)

    def vector_ids(self) -> set[str]:
        """Every id in the Chroma collection (for consistency checks and tests)."""
        collection = self.collection()
        ids: set[str] = set()
        total = collection.count()
        for offset in range(0, total, 5000):
            ids.update(collection.get(limit=5000, offset=offset, include=[])["ids"])
        return ids

    def catalog_chunk_ids(self, complete_only: bool = True) -> set[str]:
        query = "SELECT c.chunk_id FROM chunks c"
        if complete_only:
            query += " JOIN documents d ON c.doc_id = d.doc_id WHERE d.state = 'complete'"
        return {r[0] for r in self._db().execute(query)}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _forget_cached_client(chroma_path: Path) -> None:
    """Drop Chroma's process-wide cached client for one embedded store (private Chroma API:
    it is the only way to make a client re-read files another process has changed)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(chroma_path), None)
    SharedSystemClient._identifier_to_refcount.pop(str(chroma_path), None)


def forget_embedded_client(store_dir: str | Path) -> None:
    """Let go of the cached Chroma client of the store in ``store_dir`` (before deleting it)."""
    with _CHROMA_OPEN_LOCK:
        _forget_cached_client(Path(store_dir).expanduser().resolve() / CHROMA_DIR)


def _use_wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
    """Switch ``conn``'s catalogue to write-ahead logging. On a new catalogue that two processes
    open at the same moment, SQLite answers "database is locked" to the second at once (the
    switch does not wait on the busy timeout), so it is retried here until the first is done."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _chroma_metadata(doc_id: str, chunk: NewChunk) -> dict:
    # Only what the content fixes: file names and titles live in the catalogue, where a rename
    # or a removed copy changes them in one transaction (see the module docstring).
    meta = {"doc_id": doc_id, "chunk": chunk.index}
    if chunk.page is not None:  # Chroma metadata values cannot be None
        meta["page"] = chunk.page
    return meta
