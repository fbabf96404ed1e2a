import warnings
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.testclient import TestClient

from service_kit.app import create_service_app
from service_kit.settings import ObservabilitySettings


def test_behind_a_prefix_the_docs_and_routes_work_both_ways(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(root_path="/api")
    spec = client.get("/openapi.json").json()
    assert spec["servers"] == [{"url": "/api"}]
    assert "/api/openapi.json" in client.get("/docs").text
    # Through the gateway the prefix is stripped; called directly it may still be there.
    assert client.get("/items/1").json() == {"item_id": 1}
    assert client.get("/api/items/1").json() == {"item_id": 1}


def test_building_an_app_uses_no_deprecated_api() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_service_app(
            ObservabilitySettings(service_name="warn-svc", root_path="/x"),
            title="t",
            description="d",
            routers=[],
        )


def test_docs_can_be_switched_off(make_client: Callable[..., TestClient]) -> None:
    client = make_client(docs_enabled=False)
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404


def test_only_routers_that_take_input_document_the_422() -> None:
    items, probes = APIRouter(), APIRouter()

    @items.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @probes.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    app = create_service_app(
        ObservabilitySettings(service_name="probe-svc"),
        title="t",
        description="d",
        routers=[items, probes],
    )
    paths = TestClient(app).get("/openapi.json").json()["paths"]
    with_id = paths["/items/{item_id}"]["get"]["responses"]["422"]
    assert with_id["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    # No parameters, no body: nothing to validate, so no 422 to promise.
    assert "422" not in paths["/ready"]["get"]["responses"]
