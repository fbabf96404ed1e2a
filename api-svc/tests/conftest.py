from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_svc.config import Settings
from api_svc.db_setup import setup
from api_svc.main import create_app

READER_PASSWORD = "reader-test-password"


def reader_url(owner_url: str) -> str:
    """The same database as the owner's URL, as api-svc's read-only role."""
    from sqlalchemy import make_url  # noqa: PLC0415

    return (
        make_url(owner_url)
        .set(username="api_reader", password=READER_PASSWORD)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(scope="session")
def settings(owner_database_url: str) -> Settings:
    """Settings of a migrated, seeded database (setup runs once per test session)."""
    settings = Settings(
        database_url=reader_url(owner_database_url),
        migration_database_url=owner_database_url,
        seed_rows=200_000,
    )
    setup(settings)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
