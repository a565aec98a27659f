"""The catalogue as it was before migrations (store schema 3): documents, sources, chunks, meta.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "documents",
        sa.Column("doc_id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("file_type", sa.Text, nullable=False),
        sa.Column("pages", sa.Integer, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("char_count", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("named_title", sa.Integer),
        sa.Column("index_version", sa.Integer),
    )
    op.create_table(
        "sources",
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("doc_id", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_index("sources_doc", "sources", ["doc_id"])
    op.create_table(
        "chunks",
        sa.Column("chunk_id", sa.Text, primary_key=True),
        sa.Column("doc_id", sa.Text, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("heading", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tokens", sa.Text, nullable=False),
        sa.Column("kind", sa.Text),
        sa.Column("boxes", sa.Text),
        sa.Column("ocr", sa.Integer),
    )
    op.create_index("chunks_doc", "chunks", ["doc_id"])


def downgrade() -> None:
    for table in ("chunks", "sources", "documents", "meta"):
        op.drop_table(table)
