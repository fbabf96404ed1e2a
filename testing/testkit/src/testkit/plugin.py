"""pytest fixtures for every member's tests: a real PostgreSQL, never a stand-in.

``TEST_DATABASE_URL`` (an owner's SQLAlchemy URL of an empty database) is used when set;
otherwise a throwaway cluster is started from the OS packages and removed afterwards.
"""

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcluster import PostgresCluster, create_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of our own (tests that stop and restart PostgreSQL need one)."""
    cluster = create_cluster(Path(tempfile.mkdtemp(prefix="pg-test-")))
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def owner_database_url(request: pytest.FixtureRequest) -> str:
    """The SQLAlchemy URL of an empty database, as its owner."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        return url
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database("messages", "messages_owner", secrets.token_urlsafe(12))
