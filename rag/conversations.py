"""Conversations of one knowledge base, kept on disk so they survive restarts and crashes.

One SQLite file in the knowledge base's folder (``conversations.sqlite3``)::

    from rag.conversations import ConversationStore
    store = ConversationStore.for_kb(kb.path)
    cid = store.create()
    store.append(cid, {"role": "user", "content": "北京的人口是多少？"})
    store.append(cid, {"role": "assistant", "content": "……[1]", "sources": [...]})
    store.list()          # [Conversation(id, title="北京的人口是多少？", turns=1, updated=...)]
    store.messages(cid)   # the two messages, as appended
    store.delete(cid)

A message is any JSON-serialisable dict with ``role`` and ``content``; its other keys (sources,
notice, error, mode) come back as stored. Every call opens its own connection (WAL mode), so
Streamlit's threads and several app processes can share the file.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "conversations.sqlite3"
TITLE_CHARS = 80

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (conversation, seq)
);
"""


def _title(text: str) -> str:
    """One line of at most TITLE_CHARS printable characters."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.split())[:TITLE_CHARS]


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str
    created: float
    updated: float
    turns: int
    """Questions asked in it."""


class ConversationStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.executescript(_SCHEMA)

    @classmethod
    def for_kb(cls, kb_dir: str | Path) -> "ConversationStore":
        return cls(Path(kb_dir) / FILE_NAME)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    def create(self, title: str = "") -> str:
        title = _title(title)
        cid = uuid.uuid4().hex
        now = time.time()
        with closing(self._connect()) as db, db:
            db.execute("INSERT INTO conversations (id, title, created, updated) VALUES (?, ?, ?, ?)",
                       (cid, title[:TITLE_CHARS], now, now))
        return cid

    def append(self, cid: str, message: dict) -> None:
        """Add a message at the end (the first question becomes the title of an untitled one)."""
        role = str(message.get("role") or "")
        if role not in ("user", "assistant"):
            raise ValueError(f"a message's role is 'user' or 'assistant', not {role!r}")
        try:
            # ASCII escapes keep any text, lone surrogates included, exactly as given
            body = json.dumps(message, ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"a message must be plain JSON data (text, numbers, lists, dicts): {exc}") from exc
        with closing(self._connect()) as db, db:
            db.execute("BEGIN IMMEDIATE")  # the write lock before reading the next seq
            row = db.execute("SELECT title FROM conversations WHERE id = ?", (cid,)).fetchone()
            if row is None:
                raise KeyError(f"no conversation {cid!r}")
            seq = db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM messages WHERE conversation = ?",
                             (cid,)).fetchone()[0]
            db.execute("INSERT INTO messages (conversation, seq, role, body) VALUES (?, ?, ?, ?)",
                       (cid, seq, role, body))
            title = row[0]
            if not title and role == "user":
                title = _title(str(message.get("content", "")))
            db.execute("UPDATE conversations SET updated = ?, title = ? WHERE id = ?", (time.time(), title, cid))

    def messages(self, cid: str) -> list[dict]:
        """The messages in order ([] for a conversation without messages or one that is gone)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT body FROM messages WHERE conversation = ? ORDER BY seq", (cid,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def list(self) -> list[Conversation]:
        """Newest first; conversations without any message are left out."""
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.created, c.updated, "
                "SUM(CASE WHEN m.role = 'user' THEN 1 ELSE 0 END) "
                "FROM conversations c JOIN messages m ON m.conversation = c.id "
                "GROUP BY c.id ORDER BY c.updated DESC"
            ).fetchall()
        return [Conversation(r[0], r[1], r[2], r[3], int(r[4] or 0)) for r in rows]

    def exists(self, cid: str) -> bool:
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM conversations WHERE id = ?", (cid,)).fetchone() is not None

    def delete(self, cid: str) -> bool:
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM conversations WHERE id = ?", (cid,)).rowcount > 0


__all__ = ["Conversation", "ConversationStore", "FILE_NAME"]
