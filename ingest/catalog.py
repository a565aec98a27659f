"""The catalogue's tables and how to open them: a SQLite file in the knowledge-base directory
(the embedded default), or a PostgreSQL database shared by several app instances and workers.

Usage::

    from ingest.catalog import open_catalog
    catalog = open_catalog("sqlite:////path/to/docs_store/catalog.sqlite3", lock_file=...)
    catalog = open_catalog("postgresql+psycopg://docqa@db.internal/docqa")
    with catalog.transaction() as tx:           # a write: BEGIN IMMEDIATE on SQLite
        tx.execute(documents.update().values(...))
    with catalog.writer_lock(timeout_s=600):    # one writer per knowledge base
        ...

The tables are SQLAlchemy Core (no hand-written SQL per engine); Alembic migrations
(ingest/migrations/) create and upgrade them. A SQLite catalogue written before the migrations
existed (schemas 1-3) is brought to schema 3 by the old in-place steps, then stamped and
upgraded like any other.

The writer lock is a file lock beside a SQLite catalogue and a PostgreSQL advisory lock for a
shared one: it is held by a session, so a killed writer's lock goes with its connection.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection

SCHEMA_REVISION = "0003"
"""The newest Alembic revision (ingest/migrations/versions)."""

metadata = MetaData()

meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
documents = Table(
    "documents", metadata,
    Column("doc_id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("file_type", Text, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("char_count", Integer, nullable=False),
    Column("state", Text, nullable=False),  # pending / complete / deleting (ingest.store)
    Column("added_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("named_title", Integer),
    Column("index_version", Integer),
)
sources = Table(
    "sources", metadata,
    Column("path", Text, primary_key=True),
    Column("doc_id", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("added_at", Float, nullable=False),
    Index("sources_doc", "doc_id"),
)
chunks = Table(
    "chunks", metadata,
    Column("chunk_id", Text, primary_key=True),
    Column("doc_id", Text, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("page", Integer),
    Column("heading", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("tokens", Text, nullable=False),
    Column("kind", Text),
    Column("boxes", Text),
    Column("ocr", Integer),
    Index("chunks_doc", "doc_id"),
)
changes = Table(
    "changes", metadata,
    Column("generation", BigInteger, nullable=False),
    Column("doc_id", Text, nullable=False),
    Column("op", Text, nullable=False),  # "add": the document became complete; "remove": it left
    Index("changes_generation", "generation"),
)
"""Which documents each generation added or removed, so that a BM25 index built at one
generation can be brought to a later one without reading every chunk again (rag.bm25)."""


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path)}"


@dataclass
class Catalog:
    """An opened catalogue: its engine and the writer lock that goes with it."""

    engine: Engine
    lock_file: Path | None = None
    """SQLite: the file lock's path; PostgreSQL: None (an advisory lock is used)."""
    lock_name: str = "alpaca-docqa"

    @property
    def shared(self) -> bool:
        return self.engine.dialect.name != "sqlite"

    def where(self) -> str:
        """The catalogue for messages, without a password."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: on SQLite ``BEGIN IMMEDIATE`` (writers queue at the start, not
        at their first write, so none fails half-way with "database is locked")."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(docqa_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def writer_lock(self, timeout_s: float) -> Iterator[None]:
        """Hold the single-writer lock of this knowledge base, waiting up to ``timeout_s``;
        raises TimeoutError when another writer keeps it longer."""
        if not self.shared:
            from filelock import FileLock, Timeout

            lock = FileLock(str(self.lock_file))
            try:
                lock.acquire(timeout=timeout_s)
            except Timeout:
                raise TimeoutError from None
            try:
                yield
            finally:
                lock.release()
            return
        key = advisory_key(self.lock_name)
        # The lock belongs to this connection's session: it is released when the connection
        # closes, also when the process is killed (the server notices the dropped connection).
        with self.engine.connect() as conn:
            deadline = time.monotonic() + timeout_s
            while not conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                conn.rollback()
                if time.monotonic() > deadline:
                    raise TimeoutError
                time.sleep(0.2)
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine (and connection pool) per catalogue per process."""
    with _ENGINES_LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
                _sqlite_events(engine)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _ENGINES[url] = engine
        return engine


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        # SQLAlchemy, not the sqlite3 module, begins transactions (see "begin" below).
        dbapi_connection.isolation_level = None
        _use_wal(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("docqa_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(dbapi_connection, wait_s: float = 60.0) -> None:
    """Write-ahead logging. On a new catalogue that two processes open at the same moment,
    SQLite answers "database is locked" to the second at once (the switch does not wait on the
    busy timeout), so it is retried until the first is done."""
    import sqlite3

    deadline = time.monotonic() + wait_s
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def open_catalog(url: str, lock_file: Path | None = None, lock_name: str = "alpaca-docqa",
                 lock_timeout_s: float = 600.0) -> Catalog:
    """The catalogue at ``url``, created or upgraded to :data:`SCHEMA_REVISION` first (under
    the writer lock, so two processes opening a new catalogue do not both create it)."""
    catalog = Catalog(_engine(url), lock_file, lock_name)
    if current_revision(catalog.engine) != SCHEMA_REVISION:
        with catalog.writer_lock(lock_timeout_s):
            if current_revision(catalog.engine) != SCHEMA_REVISION:
                migrate(catalog.engine)
    return catalog


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Create or upgrade the tables to :data:`SCHEMA_REVISION` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        existing = inspect(conn)
        if existing.has_table("documents") and not existing.has_table("alembic_version"):
            _upgrade_unversioned(conn)  # a catalogue from before the migrations
            command.stamp(config, "0001")
        command.upgrade(config, "head")


def _upgrade_unversioned(conn: Connection) -> None:
    """A SQLite catalogue written before Alembic (schema 1-3): add the columns later versions
    added, as those versions did, so that it matches revision 0001."""
    existing = inspect(conn)
    document_columns = {c["name"] for c in existing.get_columns("documents")}
    for column, kind in (("named_title", "INTEGER"), ("index_version", "INTEGER")):
        if column not in document_columns:
            conn.exec_driver_sql(f"ALTER TABLE documents ADD COLUMN {column} {kind}")
    chunk_columns = {c["name"] for c in existing.get_columns("chunks")}
    for column, kind in (("kind", "TEXT"), ("boxes", "TEXT"), ("ocr", "INTEGER")):
        if column not in chunk_columns:
            conn.exec_driver_sql(f"ALTER TABLE chunks ADD COLUMN {column} {kind}")


def dispose_engines() -> None:
    """Close every pooled connection (tests that delete a catalogue; forked workers)."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


__all__ = ["Catalog", "open_catalog", "migrate", "current_revision", "sqlite_url", "advisory_key",
           "dispose_engines", "metadata", "meta", "documents", "sources", "chunks", "changes", "SCHEMA_REVISION"]
