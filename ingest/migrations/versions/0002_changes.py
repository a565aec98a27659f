"""The change log: which documents each generation added or removed (incremental BM25).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("doc_id", sa.Text, nullable=False),
        sa.Column("op", sa.Text, nullable=False),
    )
    op.create_index("changes_generation", "changes", ["generation"])


def downgrade() -> None:
    op.drop_table("changes")
