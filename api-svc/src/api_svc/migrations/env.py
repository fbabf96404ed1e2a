"""Alembic environment: always online, on the connection `api_svc.db_setup` hands over."""

from alembic import context
from sqlalchemy import Connection

from api_svc.models import Base

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
