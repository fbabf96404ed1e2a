"""Production switches: Swagger (``DOCS_ENABLED``) and ``/metrics`` (``METRICS_ENABLED``).

Read from the environment like the services read them in their images, on the real apps of
both services; switched off, the routes are gone (404 envelope) and the API still answers.
Compose passes both switches from .env, so production turns them off without editing a file.
"""

from collections.abc import Callable

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api_svc.config import Settings as ApiSettings
from api_svc.main import create_app as create_api_app
from processor_svc.config import Settings as ProcessorSettings
from processor_svc.main import create_app as create_processor_app
from stackctl.addresses import COMPOSE_FILE

# The page, the files it loads (served by the service itself), the document, and what
# FastAPI would serve by default.
DOCS_PATHS = (
    "/docs",
    "/docs/swagger-ui-bundle.js",
    "/docs/swagger-ui-init.js",
    "/docs/oauth2-redirect",
    "/openapi.json",
    "/redoc",
)


def _api() -> FastAPI:
    return create_api_app(ApiSettings())


def _processor() -> FastAPI:
    return create_processor_app(ProcessorSettings())


APPS: dict[str, Callable[[], FastAPI]] = {"api-svc": _api, "processor-svc": _processor}


def _client(service: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> TestClient:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # No lifespan: nothing here needs a database.
    return TestClient(APPS[service](), raise_server_exceptions=False)


@pytest.mark.parametrize("service", sorted(APPS))
def test_by_default_docs_and_metrics_are_served(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCS_ENABLED", raising=False)
    monkeypatch.delenv("METRICS_ENABLED", raising=False)
    client = _client(service, monkeypatch)
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert "app_build_info" in client.get("/metrics").text


@pytest.mark.parametrize("service", sorted(APPS))
def test_docs_enabled_false_removes_swagger_and_the_openapi_document(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(service, monkeypatch, DOCS_ENABLED="false")
    for path in DOCS_PATHS:
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "NOT_FOUND"
    assert client.get("/health").json() == {"status": "healthy"}
    assert client.get("/metrics").status_code == 200  # the other switch is independent


@pytest.mark.parametrize("service", sorted(APPS))
def test_metrics_enabled_false_removes_the_metrics_endpoint(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(service, monkeypatch, METRICS_ENABLED="false")
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert "app_" not in response.text
    assert client.get("/health").json() == {"status": "healthy"}
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("service", ["api-svc", "processor-svc"])
@pytest.mark.parametrize("switch", ["DOCS_ENABLED", "METRICS_ENABLED"])
def test_compose_takes_both_switches_from_env(service: str, switch: str) -> None:
    environment = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["environment"]
    assert environment.get(switch) == f"${{{switch}:-true}}", (
        f"{service}: {switch} cannot be switched off from .env"
    )
