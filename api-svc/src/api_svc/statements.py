"""The statements api-svc runs, written with SQLAlchemy Core against the ORM model and compiled
once, at import, to the SQL text that psycopg prepares on each pooled connection.

The model stays the one source of the table's names; per request there is no compilation,
no ORM identity map and no greenlet hop, only psycopg.
"""

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Select, Text, bindparam, select
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from api_svc.models import Message

_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Statement:
    """SQL text with named ``%(name)s`` parameters, and what its trace span is called."""

    sql: str
    operation: str  # the SQL verb: the span is named "<operation> <database>"
    # The Core statement it was compiled from, with the same parameter names (the benchmark's
    # peer runs it the usual way, through an AsyncSession).
    query: Select[Any] | None = field(default=None, compare=False)

    @classmethod
    def compile(cls, query: Select[Any]) -> "Statement":
        sql = str(query.compile(dialect=_DIALECT))
        return cls(sql=sql, operation=sql.split(None, 1)[0], query=query)


MESSAGE_BY_ID = Statement.compile(
    select(Message.id, Message.text).where(Message.id == bindparam("id", type_=Integer))
)

# Newest first with no index on created_at: every matching row is read and sorted, which is
# the bottleneck the README walks through. A trigram index on text is the fix.
# No ESCAPE clause: PostgreSQL's default escape character is the backslash the route's
# pattern uses (an uninitialised dialect would render ESCAPE '\\' for a backslash).
SEARCH = Statement.compile(
    select(Message.id, Message.text)
    .where(Message.text.ilike(bindparam("pattern", type_=Text)))
    .order_by(Message.created_at.desc(), Message.id.desc())
    .limit(bindparam("limit", type_=Integer))
)
