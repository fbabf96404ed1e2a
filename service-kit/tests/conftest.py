from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from service_kit.app import create_service_app
from service_kit.settings import ObservabilitySettings

router = APIRouter()


class BoomError(Exception):
    pass


@router.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@router.get("/boom")
async def boom() -> None:
    raise BoomError("secret internals")


def build_app(**overrides: Any) -> FastAPI:
    settings = ObservabilitySettings(service_name="test-svc", **overrides)
    return create_service_app(settings, title="test", description="test", routers=[router])


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        client = TestClient(build_app(**overrides), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
