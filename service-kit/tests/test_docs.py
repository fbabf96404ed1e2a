"""The services' own Swagger UI page (service_kit.docs): no CDN, no inline script.

The same page in a real browser through the gateway: tests/e2e/test_swagger_ui.py.
"""

import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from swagger_ui_bundle import swagger_ui_path

from testkit import metric_value

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "swagger-ui-init.js": "text/javascript; charset=utf-8",
}


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:  # noqa: ARG002 - any end tag ends the script
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data


def _page(client: TestClient) -> _Tags:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    tags = _Tags()
    tags.feed(response.text)
    return tags


def test_the_page_has_no_inline_script_and_names_no_other_host(
    make_client: Callable[..., TestClient],
) -> None:
    page = _page(make_client(root_path="/api"))
    scripts = [attrs["src"] for tag, attrs in page.tags if tag == "script"]
    assert scripts == ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui-init.js"]
    assert page.script_text.strip() == ""
    # No event handler attributes (onload=...) either: they are inline script too.
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    links = {attrs["rel"]: attrs["href"] for tag, attrs in page.tags if tag == "link"}
    assert links == {
        "stylesheet": "/api/docs/swagger-ui.css",
        "icon": "/api/docs/favicon-32x32.png",
    }
    (root,) = [attrs for tag, attrs in page.tags if attrs.get("id") == "swagger-ui"]
    assert root["data-openapi-url"] == "/api/openapi.json"


def test_without_a_prefix_everything_is_at_the_root(client: TestClient) -> None:
    page = _page(client)
    sources = [attrs.get("src") or attrs.get("href") for _, attrs in page.tags]
    assert "/docs/swagger-ui-bundle.js" in sources
    assert "/docs/swagger-ui.css" in sources


@pytest.mark.parametrize(("name", "content_type"), ASSETS.items())
def test_each_file_is_served_with_its_type_and_revalidated_by_etag(
    client: TestClient, name: str, content_type: str
) -> None:
    response = client.get(f"/docs/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    again = client.get(f"/docs/{name}", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert client.get(f"/docs/{name}", headers={"if-none-match": '"other"'}).status_code == 200


def test_swagger_ui_files_are_the_pinned_package_s(client: TestClient) -> None:
    assert swagger_ui_path.name == "swagger-ui-5.31.0"  # moves with the pin in pyproject.toml
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert client.get(f"/docs/{name}").content == (swagger_ui_path / name).read_bytes()


def test_the_start_up_script_reads_the_document_url_from_the_page(client: TestClient) -> None:
    script = client.get("/docs/swagger-ui-init.js").text
    assert "root.dataset.openapiUrl" in script
    assert "validatorUrl: null" in script  # the badge would load an image from another host
    assert not re.search(r"https?://", script)


@pytest.mark.parametrize(
    "path", ["/docs/index.html", "/docs/swagger-initializer.js", "/docs/oauth2-redirect"]
)
def test_nothing_else_under_docs_is_served(client: TestClient, path: str) -> None:
    # The wheel also holds index.html and a petstore initializer; only what the page uses is
    # served. No OAuth2 redirect page: no service has an OAuth2 security scheme.
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_docs_requests_are_counted_under_their_own_routes(client: TestClient) -> None:
    client.get("/docs")
    client.get("/docs/swagger-ui.css")
    exposition = client.get("/metrics").text
    for route in ("/docs", "/docs/swagger-ui.css"):
        sample = {"service": "test-svc", "method": "GET", "route": route, "status": "200"}
        assert metric_value(exposition, "app_http_requests_total", **sample) == 1


def test_switched_off_there_is_no_page_and_no_file(make_client: Callable[..., TestClient]) -> None:
    client = make_client(docs_enabled=False)
    for path in ("/docs", *(f"/docs/{name}" for name in ASSETS)):
        assert client.get(path).status_code == 404, path
