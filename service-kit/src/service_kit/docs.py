"""Swagger UI served by the service itself: pinned assets, no CDN, no inline script.

FastAPI's own page loads swagger-ui from cdn.jsdelivr.net and starts it with an inline
``<script>``, so it is blank wherever that CDN is unreachable and needs a CSP with a third-party
host and ``'unsafe-inline'``. This page links swagger-ui's files from the pinned
``swagger-ui-bundle-v2`` wheel and a static start-up script (``static/swagger-ui-init.js``),
all under ``{root_path}/docs/``, so the gateway's CSP for it can be ``script-src 'self'``.

The files are read once, when the app is built (a missing one fails at start-up, not on the
first visit), and answered from memory with a strong ETag: a browser revalidates them and gets
a 304 until the wheel or the script changes.
"""

import hashlib
from dataclasses import dataclass
from html import escape
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

_STATIC = Path(__file__).parent / "static"
_GET = ["GET", "HEAD"]


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def read(cls, path: Path, media_type: str) -> "Asset":
        body = path.read_bytes()
        return cls(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    async def serve(self, request: Request) -> Response:
        # no-cache = revalidate every time: cheap (a 304), and never a stale mix of versions.
        headers = {"ETag": self.etag, "Cache-Control": "no-cache"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


# Only what the page uses (not the wheel's index.html and its petstore initializer). Explicit
# types: behind the gateway's nosniff a script served as anything else would be refused.
_FILES = (
    (swagger_ui_path, "swagger-ui-bundle.js", "text/javascript"),
    (swagger_ui_path, "swagger-ui.css", "text/css"),
    (swagger_ui_path, "favicon-32x32.png", "image/png"),
    (_STATIC, "swagger-ui-init.js", "text/javascript"),
)


def page_html(title: str, root_path: str, docs_url: str, openapi_url: str) -> str:
    """The page: the OpenAPI document's URL travels in a data attribute, not in a script."""
    base = escape(root_path + docs_url)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} - Swagger UI</title>
<link rel="stylesheet" href="{base}/swagger-ui.css">
<link rel="icon" type="image/png" href="{base}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(root_path + openapi_url)}"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script src="{base}/swagger-ui-init.js"></script>
</body>
</html>
"""


def install_swagger_ui(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """``GET {docs_url}`` and its four files; the app must serve its OpenAPI document."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("Swagger UI needs the app's OpenAPI document (openapi_url)")
    title = app.title

    # The prefix comes from the request's scope (our middleware sets it from ROOT_PATH), as in
    # FastAPI's own page: /api/docs links /api/docs/swagger-ui.css and /api/openapi.json.
    async def swagger_ui(request: Request) -> HTMLResponse:
        root_path = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(page_html(title, root_path, docs_url, openapi_url))

    # API routes, not Starlette's plain ones (as FastAPI's page is): only those put themselves
    # in the scope, so metrics and the access log name them instead of counting "unmatched".
    app.add_api_route(docs_url, swagger_ui, methods=_GET, include_in_schema=False)
    for directory, name, media_type in _FILES:
        # One fixed route per file: the route label stays a small known set, and any other
        # path under /docs/ is the usual 404 envelope.
        asset = Asset.read(directory / name, media_type)
        app.add_api_route(f"{docs_url}/{name}", asset.serve, methods=_GET, include_in_schema=False)
