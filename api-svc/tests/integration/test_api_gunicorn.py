"""api-svc under real gunicorn with 2 workers while PostgreSQL goes away and comes back."""

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api_svc.config import Settings
from api_svc.db_setup import setup
from testkit import PostgresCluster, ServiceProcess, free_port, json_lines, start_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(
    postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    # A database of its own on the cluster this test stops, whatever TEST_DATABASE_URL says.
    password = secrets.token_urlsafe(12)
    owner = postgres_cluster.create_database("messages_restart", "restart_owner", password)
    reader = postgres_cluster.url("restart_reader", "reader-pw", "messages_restart")
    setup(Settings(database_url=reader, migration_database_url=owner, seed_rows=1000))
    tmp = tmp_path_factory.mktemp("api")
    (tmp / "metrics").mkdir()
    service = start_service(
        "api_svc.main:app",
        name="api-svc",
        port=free_port(),
        log_path=tmp / "api.log",
        env={"DATABASE_URL": reader, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")},
    )
    yield service
    service.stop()


def _get(service: ServiceProcess, path: str) -> httpx.Response:
    return httpx.get(service.url(path), timeout=10)


def test_database_outage_is_503_and_recovers_without_a_restart(
    service: ServiceProcess, postgres_cluster: PostgresCluster
) -> None:
    # Warm the pools of both workers.
    for _ in range(20):
        assert _get(service, "/message/1").status_code == 200
    workers = service.worker_pids()

    postgres_cluster.stop("fast")
    try:
        for path in ("/message/1", "/message/search?q=abc", "/ready"):
            start = time.monotonic()
            response = _get(service, path)
            assert time.monotonic() - start < 5, "no request may hang on a dead database"
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"
            assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
        assert _get(service, "/health").status_code == 200
    finally:
        postgres_cluster.start()

    deadline = time.monotonic() + 5
    statuses: list[int] = []
    while time.monotonic() < deadline:
        statuses = [_get(service, "/message/1").status_code for _ in range(10)]
        if statuses == [200] * 10:
            break
        time.sleep(0.1)
    assert statuses == [200] * 10, "api-svc did not recover within 5 s of PostgreSQL's return"
    assert _get(service, "/ready").status_code == 200
    assert service.worker_pids() == workers, "recovery must not need new workers"


def test_database_errors_are_logged_as_json_without_secrets(service: ServiceProcess) -> None:
    lines = json_lines(Path(service.log_path).read_text())
    warnings = [line for line in lines if line["event"] == "database_unavailable"]
    assert warnings
    assert all("reader-pw" not in str(line) for line in lines)
