"""api-svc settings: one typed object, read from the environment."""

from functools import lru_cache

from pydantic import Field

from service_kit.settings import ObservabilitySettings, from_environment


class Settings(ObservabilitySettings):
    service_name: str = "api-svc"

    # The read-only role api-svc serves with (SELECT only; created by `api-svc-db setup`).
    database_url: str = "postgresql+psycopg://api_reader:api_reader@127.0.0.1:5432/messages"
    # The owner role; only `api-svc-db` (migrations, role, seed) uses it.
    migration_database_url: str | None = None

    # A fixed pool per worker by default. Overflow is the pool's max_size above its min_size:
    # connections it opens under load and closes after they have been idle for a while.
    db_pool_size: int = Field(default=10, ge=1, le=100)
    db_max_overflow: int = Field(default=0, ge=0, le=100)
    # Bounds on waiting: for a pooled connection, for a new one, for one statement.
    db_pool_timeout_seconds: float = Field(default=2.0, gt=0)
    db_connect_timeout_seconds: int = Field(default=2, ge=1)
    db_statement_timeout_ms: int = Field(default=5000, ge=100)

    # Rows `api-svc-db setup` seeds beside the readable ones: enough that a scan is slow.
    seed_rows: int = Field(default=500_000, ge=0)


@lru_cache
def get_settings() -> Settings:
    """From the environment; an invalid value fails with one line naming the variable."""
    return from_environment(Settings)
