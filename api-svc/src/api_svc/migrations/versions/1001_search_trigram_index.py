"""The fix for the slow search: a trigram index that ILIKE '%q%' can use.

Its own branch, so the bottleneck ships by default and one command applies (or reverts) the fix:
`make fix-search` / `make unfix-search`, i.e. `api-svc-db fix-search` / `api-svc-db unfix-search`.

Revision ID: 1001
Revises:
"""

from collections.abc import Sequence

from alembic import op

revision: str = "1001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = ("search_index",)
depends_on: str | Sequence[str] | None = "0001"


def upgrade() -> None:
    # pg_trgm is a trusted extension: the database owner may create it without superuser.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_messages_text_trgm ON messages USING gin (text gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_messages_text_trgm")
