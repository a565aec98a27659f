"""Smoke tests for the throwaway servers of tests/helpers_servers.py, used for real."""

# ruff: noqa: F811 - the imported fixtures are meant to be shadowed by test arguments

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from tests.helpers_servers import postgres_server, postgres_url  # noqa: F401

pytestmark = [pytest.mark.timeout(300), pytest.mark.server]


def test_postgres_table_roundtrip(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
            conn.execute(
                sa.text("INSERT INTO notes (body) VALUES (:b)"),
                [{"b": "北京是首都"}, {"b": "hello"}],
            )
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, body FROM notes ORDER BY id")).all()
            encoding = conn.execute(sa.text("SHOW server_encoding")).scalar_one()
    finally:
        engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "北京是首都"), (2, "hello")]
    assert encoding == "UTF8"


def test_create_database_gives_distinct_empty_databases(postgres_server):
    first, second = postgres_server.create_database(), postgres_server.create_database()
    assert first != second
    tables = sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
    engines = [sa.create_engine(first), sa.create_engine(second)]
    try:
        with engines[0].begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_in_first (x int)"))
            assert conn.execute(tables).scalar_one() == 1
            name_first = conn.execute(sa.text("SELECT current_database()")).scalar_one()
        with engines[1].connect() as conn:
            assert conn.execute(tables).scalar_one() == 0
            name_second = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        for engine in engines:
            engine.dispose()
    assert name_first != name_second
    assert first.endswith("/" + name_first) and second.endswith("/" + name_second)


def test_advisory_lock_blocks_other_connections(postgres_url):
    engine = sa.create_engine(postgres_url)
    try_lock = sa.text("SELECT pg_try_advisory_lock(:k)")
    try:
        with engine.connect() as holder, engine.connect() as other:
            assert holder.execute(try_lock, {"k": 4242}).scalar_one() is True
            assert other.execute(try_lock, {"k": 4242}).scalar_one() is False
            # Another key is not affected.
            assert other.execute(try_lock, {"k": 4243}).scalar_one() is True
            unlock = sa.text("SELECT pg_advisory_unlock(:k)")
            assert holder.execute(unlock, {"k": 4242}).scalar_one() is True
            assert other.execute(try_lock, {"k": 4242}).scalar_one() is True
    finally:
        engine.dispose()


def test_chroma_collection_visible_from_second_client(chroma_server):
    import chromadb
    from chromadb.config import Settings

    def client():
        return chromadb.HttpClient(
            host=chroma_server[0],
            port=chroma_server[1],
            settings=Settings(anonymized_telemetry=False),
        )

    name = f"smoke_{uuid.uuid4().hex[:8]}"
    vectors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    writer = client().create_collection(name, embedding_function=None)
    writer.add(ids=["a", "b", "c"], embeddings=vectors, documents=["甲", "乙", "丙"])

    reader = client().get_collection(name, embedding_function=None)
    assert reader.count() == 3
    got = reader.get(ids=["a", "b", "c"], include=["embeddings", "documents"])
    by_id = dict(zip(got["ids"], zip(got["documents"], got["embeddings"])))
    assert set(by_id) == {"a", "b", "c"}
    for key, doc, vec in zip("abc", ["甲", "乙", "丙"], vectors):
        assert by_id[key][0] == doc
        assert list(by_id[key][1]) == pytest.approx(vec)
    nearest = reader.query(query_embeddings=[[0.1, 0.9, 0.0]], n_results=1)
    assert nearest["ids"] == [["b"]]
