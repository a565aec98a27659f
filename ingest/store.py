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

Chroma runs embedded under ``store.dir`` or, when ``store.chroma_host`` is set, as a server.
The catalogue (ingest.catalog) is a SQLite file in ``store.dir`` or, when ``store.catalog_url``
is set, a PostgreSQL database that several app instances and ingestion workers share; the
writer lock is then PostgreSQL's (an advisory lock) instead of a file.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import Integer, Text, cast, delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from ingest import catalog as cat
from ingest.catalog import changes, chunks, documents, meta, sources
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
    """``ids`` in batches that stay under SQLite's limit on query parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _insert(conn: Connection, table):
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL alike)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def _insert_missing(conn: Connection, table, **values) -> None:
    conn.execute(_insert(conn, table).values(**values).on_conflict_do_nothing())


def _upsert(conn: Connection, table, key: str, **values) -> None:
    statement = _insert(conn, table).values(**values)
    conn.execute(statement.on_conflict_do_update(
        index_elements=[key], set_={k: statement.excluded[k] for k in values if k != key}))


def open_store_catalog(settings: Settings) -> cat.Catalog:
    """The catalogue of the knowledge base ``settings.store`` names: ``store.catalog_url``, else
    the SQLite file in ``store.dir`` (created, or upgraded, on the way)."""
    folder = Path(settings.store.dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    url = settings.store.catalog_url or cat.sqlite_url(folder / CATALOG_FILE)
    from sqlalchemy.engine import make_url

    where = make_url(url).render_as_string(hide_password=True)
    try:
        return cat.open_catalog(url, lock_file=folder / LOCK_FILE, lock_timeout_s=settings.store.lock_timeout_s)
    except TimeoutError:
        raise StoreBusy(f"The catalogue {where} is being upgraded by another process; "
                        "try again when it has finished.") from None
    except SQLAlchemyError as exc:
        raise StoreError(f"Cannot open the catalogue {where}: {exc}") from exc


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
        self.catalog = open_store_catalog(settings)
        self._init_catalog()
        self._check_embedder()
        self._chroma_lock = threading.Lock()
        self._collection = None
        self._collection_generation = -1

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings, embedder) -> "DocumentStore":
        return cls(settings, embedder)

    def _rows(self, statement) -> list:
        """All rows of a read (a pooled connection, given back at once)."""
        with self.catalog.reading() as conn:
            return conn.execute(statement).all()

    def _scalar(self, statement):
        with self.catalog.reading() as conn:
            return conn.execute(statement).scalar()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.catalog.transaction() as tx:
            yield tx

    def _init_catalog(self) -> None:
        # (the tables themselves: ingest.catalog's migrations)
        with self._transaction() as tx:
            _insert_missing(tx, meta, key="schema_version", value=str(SCHEMA_VERSION))
            tx.execute(update(meta).where(meta.c.key == "schema_version",
                                          cast(meta.c.value, Integer) < SCHEMA_VERSION)
                       .values(value=str(SCHEMA_VERSION)))
            _insert_missing(tx, meta, key="generation", value="0")
            # the change log (rag.bm25 follows it) starts here: at 0, or where an older catalogue was
            generation = tx.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar()
            _insert_missing(tx, meta, key="changes_from", value=generation)
            _insert_missing(tx, meta, key="embedder", value=json.dumps(self.embedder.signature, sort_keys=True))
            collection = self.settings.store.collection
            if self.settings.store.chroma_host:
                # Several knowledge bases may share one server: give each its own collection.
                collection = f"{collection}-{uuid.uuid4().hex[:12]}"
            _insert_missing(tx, meta, key="collection", value=collection)

    def _meta(self, key: str) -> str:
        return self._scalar(select(meta.c.value).where(meta.c.key == key))

    def _check_embedder(self) -> None:
        built_with = json.loads(self._meta("embedder"))
        if built_with != self.embedder.signature:
            fresh = "database (store.catalog_url)" if self.catalog.shared else "knowledge base directory"
            raise EmbedderMismatch(
                f"The knowledge base at {self.where} was built with embedder {built_with['embedder']} "
                f"(dimension {built_with['dimension']}), but the configured embedder is "
                f"{self.embedder.name} (dimension {self.embedder.dimension}). Vectors from two "
                f"models cannot be mixed: set DOCQA_EMBEDDING__MODEL to the original model, or "
                f"ingest into a new {fresh}."
            )

    @property
    def where(self) -> str:
        """The knowledge base for messages: its directory, or its shared catalogue."""
        return self.catalog.where() if self.catalog.shared else str(self.dir)

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
        d = documents.c
        rows = self._rows(
            select(d.doc_id, d.title, d.file_type, d.pages, d.chunk_count, d.char_count, d.added_at, d.updated_at)
            .where(d.state == COMPLETE).order_by(d.added_at, d.doc_id))
        by_doc: dict[str, list[str]] = {}
        for path, doc_id in self._rows(select(sources.c.path, sources.c.doc_id)
                                       .order_by(sources.c.added_at, sources.c.path)):
            by_doc.setdefault(doc_id, []).append(path)
        return [DocumentInfo(*row, sources=by_doc.get(row[0], [])) for row in rows]

    def outdated_ids(self) -> set[str]:
        """Ids of documents indexed with an older INDEX_VERSION: a rebuild makes them findable
        the current ways (their stored text, tokens and vectors come from older loaders)."""
        d = documents.c
        return {row[0] for row in self._rows(
            select(d.doc_id).where(d.state == COMPLETE, func.coalesce(d.index_version, 1) < INDEX_VERSION))}

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
        paths = {ref}
        try:
            paths.add(str(Path(ref).expanduser().resolve()))
        except (OSError, ValueError, RuntimeError):
            pass
        complete_sources = select(sources.c.path).join(documents, sources.c.doc_id == documents.c.doc_id) \
            .where(documents.c.state == COMPLETE)
        row = self._rows(complete_sources.where(sources.c.path.in_(sorted(paths))).limit(1))
        if row:
            return ("source", row[0][0])
        found = [("document", r[0]) for r in self._rows(
            select(documents.c.doc_id).where(documents.c.state == COMPLETE,
                                             func.substr(documents.c.doc_id, 1, len(ref)) == ref))]
        found += [("source", r[0]) for r in self._rows(complete_sources.where(sources.c.file_name == ref))]
        return found[0] if len(found) == 1 else None

    def sources_of(self, doc_id: str) -> list[str]:
        """The source paths of one document, primary first."""
        return [r[0] for r in self._rows(select(sources.c.path).where(sources.c.doc_id == doc_id)
                                         .order_by(sources.c.added_at, sources.c.path))]

    def doc_for_source(self, path: str) -> str | None:
        return self._scalar(select(sources.c.doc_id).where(sources.c.path == path))

    def is_complete(self, doc_id: str) -> bool:
        return self._scalar(select(documents.c.state).where(documents.c.doc_id == doc_id)) == COMPLETE

    def complete_doc_ids(self) -> set[str]:
        return {r[0] for r in self._rows(select(documents.c.doc_id).where(documents.c.state == COMPLETE))}

    def chunk_count(self) -> int:
        return int(self._scalar(select(func.count()).select_from(chunks)
                                .join(documents, chunks.c.doc_id == documents.c.doc_id)
                                .where(documents.c.state == COMPLETE)))

    def chunks(self, chunk_ids: Sequence[str]) -> list[ChunkRecord]:
        """Chunks of complete documents, in the order asked; unknown ids are left out."""
        if not chunk_ids:
            return []
        c, d = chunks.c, documents.c
        primary = (select(sources.c.path).where(sources.c.doc_id == c.doc_id)
                   .order_by(sources.c.added_at, sources.c.path).limit(1).scalar_subquery())
        found: dict[str, ChunkRecord] = {}
        ids = list(chunk_ids)
        for part in _id_batches(ids):
            for row in self._rows(
                select(c.chunk_id, c.doc_id, c.idx, c.page, c.heading, c.text, d.title, primary, c.boxes, c.ocr)
                .join(documents, c.doc_id == d.doc_id).where(d.state == COMPLETE, c.chunk_id.in_(part))
            ):
                found[row[0]] = ChunkRecord(*row[:7], source=row[7] or "", boxes=_boxes(row[8]),
                                            ocr=bool(row[9]))
        return [found[i] for i in ids if i in found]

    def document_chunks(self, doc_id: str) -> list[ChunkRecord]:
        ids = [r[0] for r in self._rows(select(chunks.c.chunk_id).where(chunks.c.doc_id == doc_id)
                                        .order_by(chunks.c.idx))]
        return self.chunks(ids)

    def marked_kinds(self, chunk_ids: Sequence[str]) -> dict[str, str]:
        """The kind of those of ``chunk_ids`` that are not body text (ingest.chunk_kinds)."""
        found: dict[str, str] = {}
        for part in _id_batches(list(chunk_ids)):
            found.update(self._rows(select(chunks.c.chunk_id, chunks.c.kind).where(
                chunks.c.chunk_id.in_(part), chunks.c.kind.is_not(None), chunks.c.kind != "body")))
        return found

    def lexical_rows(self, doc_ids: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
        """``(chunk_id, doc_id, space-joined search tokens)`` of every complete chunk (of
        ``doc_ids`` only, when given), by chunk id."""
        statement = (select(chunks.c.chunk_id, chunks.c.doc_id, chunks.c.tokens)
                     .join(documents, chunks.c.doc_id == documents.c.doc_id)
                     .where(documents.c.state == COMPLETE).order_by(chunks.c.chunk_id))
        if doc_ids is None:
            return [tuple(r) for r in self._rows(statement)]
        rows: list[tuple[str, str, str]] = []
        for part in _id_batches(sorted(doc_ids)):
            rows += [tuple(r) for r in self._rows(statement.where(chunks.c.doc_id.in_(part)))]
        return sorted(rows)

    def changes_since(self, generation: int) -> tuple[int, list[tuple[int, str, str]]] | None:
        """``(current generation, [(generation, doc_id, "add" | "remove"), ...])``: the changes
        after ``generation``, in order. None when the log does not reach back that far (it starts
        where the catalogue was created or upgraded, ``meta.changes_from``): rebuild instead."""
        with self.catalog.reading() as conn:
            values = dict(conn.execute(select(meta.c.key, meta.c.value)
                                       .where(meta.c.key.in_(["generation", "changes_from"]))).all())
            current = int(values["generation"])
            if "changes_from" not in values or not int(values["changes_from"]) <= generation <= current:
                return None
            rows = conn.execute(select(changes.c.generation, changes.c.doc_id, changes.c.op)
                                .where(changes.c.generation > generation, changes.c.generation <= current)
                                .order_by(changes.c.generation)).all()
        return current, [tuple(r) for r in rows]

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
        with ExitStack() as held:
            try:
                held.enter_context(self.catalog.writer_lock(timeout))
            except TimeoutError:
                raise StoreBusy(
                    f"The knowledge base at {self.where} is busy: another process has been writing to it "
                    f"for more than {timeout:.0f} s. Try again when it has finished."
                ) from None
            self.recover()
            yield self

    def has_leftovers(self) -> bool:
        """Whether an interrupted writer left documents that are not complete."""
        return bool(self._rows(select(documents.c.doc_id).where(documents.c.state != COMPLETE).limit(1)))

    def recover(self) -> int:
        """Delete what interrupted writes left: documents not complete and their vectors."""
        stale = [r[0] for r in self._rows(select(documents.c.doc_id).where(documents.c.state != COMPLETE))]
        for doc_id in stale:
            self._purge(doc_id)
        return len(stale)

    def _purge(self, doc_id: str) -> None:
        """Remove a document's vectors, then its catalogue rows (in that order, so a crash in
        between leaves a row that the next ``recover`` finds)."""
        self.collection().delete(where={"doc_id": doc_id})
        with self._transaction() as tx:
            for table in (chunks, sources, documents):
                tx.execute(delete(table).where(table.c.doc_id == doc_id))

    @staticmethod
    def _bump_generation(tx: Connection, added: Sequence[str] = (), removed: Sequence[str] = ()) -> int:
        """The next generation, with the documents it made complete and those it took away
        logged for readers that follow changes (rag.bm25)."""
        tx.execute(update(meta).where(meta.c.key == "generation")
                   .values(value=cast(cast(meta.c.value, Integer) + 1, Text)))
        generation = int(tx.execute(select(meta.c.value).where(meta.c.key == "generation")).scalar())
        logged = [{"generation": generation, "doc_id": d, "op": "add"} for d in added]
        logged += [{"generation": generation, "doc_id": d, "op": "remove"} for d in removed]
        if logged:
            tx.execute(changes.insert(), logged)
        return generation

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
                _upsert(tx, documents, "doc_id", doc_id=doc.doc_id, title=doc.title, file_type=doc.file_type,
                        pages=doc.pages, chunk_count=len(doc.chunks), char_count=sum(len(c.text) for c in doc.chunks),
                        state=PENDING, added_at=now, updated_at=now, named_title=int(named),
                        index_version=INDEX_VERSION)
                tx.execute(delete(chunks).where(chunks.c.doc_id == doc.doc_id))
                if doc.chunks:
                    tx.execute(chunks.insert(), [
                        {"chunk_id": chunk_id_for(doc.doc_id, c.index), "doc_id": doc.doc_id, "idx": c.index,
                         "page": c.page, "heading": c.heading, "text": c.text, "tokens": " ".join(c.tokens),
                         "kind": c.kind, "ocr": 1 if c.ocr else None,
                         "boxes": json.dumps([[p, *b] for p, b in c.boxes]) if c.boxes else None}
                        for c in doc.chunks
                    ])
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
        s = sources.c
        with self._transaction() as tx:
            if complete:
                tx.execute(update(documents).where(documents.c.doc_id == doc_id)
                           .values(state=COMPLETE, updated_at=now))
            previous = tx.execute(select(s.doc_id, s.added_at).where(s.path == source)).first()
            primaries = {doc_id: self._primary(tx, doc_id)}
            if previous and previous[0] != doc_id:
                primaries[previous[0]] = self._primary(tx, previous[0])
            places = [previous[1]] if previous and previous[0] == doc_id else []
            for old in replaces:
                row = tx.execute(select(s.added_at).where(s.path == old, s.doc_id == doc_id)).first()
                if row and old != source:
                    tx.execute(delete(sources).where(s.path == old))
                    places.append(row[0])
            _upsert(tx, sources, "path", path=source, doc_id=doc_id, file_name=Path(source).name,
                    added_at=min(places, default=now))
            orphan = self._orphan_after_move(tx, previous[0] if previous else None, doc_id)
            for doc, primary in primaries.items():
                if doc != orphan:
                    self._follow_name(tx, doc, primary)
            generation = self._bump_generation(tx, added=[doc_id] if complete else [],
                                               removed=[orphan] if orphan else [])
        self._mark_seen(generation)
        if orphan:
            self._purge(orphan)

    @staticmethod
    def _primary(tx: Connection, doc_id: str) -> str | None:
        return tx.execute(select(sources.c.path).where(sources.c.doc_id == doc_id)
                          .order_by(sources.c.added_at, sources.c.path).limit(1)).scalar()

    def _follow_name(self, tx: Connection, doc_id: str, old_primary: str | None) -> None:
        """After ``doc_id``'s sources changed: when its primary source is another file now and
        its title was that of the old primary's file name, take the new primary's stem as title
        (and as the heading of chunks that had the old title as theirs). A title that came from
        the document itself stays."""
        new_primary = self._primary(tx, doc_id)
        if new_primary is None or new_primary == old_primary:
            return
        d = documents.c
        row = tx.execute(select(d.title, d.named_title).where(d.doc_id == doc_id)).first()
        if row is None:
            return
        title, named = row
        if named is None:  # a catalogue from before schema 2: judge by the old primary's name
            named = old_primary is not None and title == Path(old_primary).stem
            tx.execute(update(documents).where(d.doc_id == doc_id).values(named_title=int(named)))
        new_title = Path(new_primary).stem
        if not named or new_title == title:
            return
        tx.execute(update(chunks).where(chunks.c.doc_id == doc_id, chunks.c.heading == title)
                   .values(heading=new_title))
        tx.execute(update(documents).where(d.doc_id == doc_id).values(title=new_title))

    @staticmethod
    def _orphan_after_move(tx: Connection, old_doc: str | None, new_doc: str) -> str | None:
        if old_doc is None or old_doc == new_doc:
            return None
        left = tx.execute(select(func.count()).select_from(sources).where(sources.c.doc_id == old_doc)).scalar()
        if left:
            return None
        tx.execute(update(documents).where(documents.c.doc_id == old_doc).values(state=DELETING))
        return old_doc

    def remove_source(self, source: str) -> bool:
        """Forget one file name; the document goes when no name is left. Call inside ``writing()``."""
        with self._transaction() as tx:
            doc_id = tx.execute(select(sources.c.doc_id).where(sources.c.path == source)).scalar()
            if doc_id is None:
                return False
            primary = self._primary(tx, doc_id)
            tx.execute(delete(sources).where(sources.c.path == source))
            orphan = self._orphan_after_move(tx, doc_id, "")
            if orphan is None:
                self._follow_name(tx, doc_id, primary)
            generation = self._bump_generation(tx, removed=[orphan] if orphan else [])
        self._mark_seen(generation)
        if orphan:
            self._purge(orphan)
        return True

    def remove_document(self, doc_id: str) -> bool:
        """Remove a document with all its names and chunks. Call inside ``writing()``."""
        with self._transaction() as tx:
            changed = tx.execute(update(documents).where(documents.c.doc_id == doc_id, documents.c.state == COMPLETE)
                                 .values(state=DELETING)).rowcount
            generation = self._bump_generation(tx, removed=[doc_id] if changed else [])
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
        statement = select(chunks.c.chunk_id)
        if complete_only:
            statement = statement.join(documents, chunks.c.doc_id == documents.c.doc_id) \
                .where(documents.c.state == COMPLETE)
        return {r[0] for r in self._rows(statement)}

    def close(self) -> None:
        """Let go of pooled SQLite connections (the directory may be deleted and made anew;
        a connection to the old file would write into a deleted one). A shared catalogue's pool
        stays for the process's other stores."""
        if not self.catalog.shared:
            self.catalog.engine.dispose()


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


def _chroma_metadata(doc_id: str, chunk: NewChunk) -> dict:
    # Only what the content fixes: file names and titles live in the catalogue, where a rename
    # or a removed copy changes them in one transaction (see the module docstring).
    meta = {"doc_id": doc_id, "chunk": chunk.index}
    if chunk.page is not None:  # Chroma metadata values cannot be None
        meta["page"] = chunk.page
    return meta
