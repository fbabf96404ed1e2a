from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from processor_svc.config import Settings
from processor_svc.main import create_app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    settings = Settings(process_delay_seconds=0.05)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
