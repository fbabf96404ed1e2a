"""The README is part of the product: a newcomer's five minutes, its commands and paths true.

Links and anchors (README.md and docs/*.md) and the alerts' runbook links are checked in
test_docs_links.py.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MAX_LINES = 300
# Where the README's short paths start: the service_kit package (`service_kit/app.py`),
# the gateway (`conf.d/30-gateway.conf`), the end-to-end tests (`test_schemathesis.py`).
PATH_BASES = ("", "service-kit/src/", "gateway/", "tests/e2e/")
# A relative path: with a slash (`scripts/pg-backup`, `gateway/`), or a file name with an extension.
_PATH = re.compile(
    r"^[\w.-]+(?:/[\w.-]+)+/?$|^[\w.-]+/$|^[\w-]+\.(?:py|conf|yml|yaml|json|alloy|toml|lock|txt|md)$"
)


def test_the_readme_is_read_in_five_minutes() -> None:
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_the_readme_has_what_a_newcomer_needs() -> None:
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    needed = ["Quick start", "What runs where", "The life of one request", "Tests", "Documentation"]
    assert [h for h in headings if h in needed] == needed, headings


def test_the_readme_links_every_document_under_docs() -> None:
    for path in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{path.name})" in README, f"README.md does not link docs/{path.name}"


def test_the_test_command_is_what_ci_runs() -> None:
    assert "```sh\nmake test\n```" in README
    ci = (ROOT / ".ci/run").read_text().strip().splitlines()
    assert ci[-1] == "make test"


def test_every_image_the_readme_shows_is_a_committed_png() -> None:
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README)
    # The Swagger UI screenshots of tests/e2e/test_swagger_ui.py (`make screenshots`).
    assert {"docs/swagger-ui-api-svc.png", "docs/swagger-ui-processor-svc.png"} <= set(images)
    for image in images:
        assert (ROOT / image).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), image


def test_every_path_the_readme_names_exists() -> None:
    # The life of one request names the file of every step: a rename must update it.
    paths = {span for span in re.findall(r"`([^`\s]+)`", README) if _PATH.match(span)}
    assert "service-kit/src/service_kit/middleware.py" in paths
    assert "api-svc/src/api_svc/statements.py" in paths
    missing = sorted(p for p in paths if not any((ROOT / base / p).exists() for base in PATH_BASES))
    assert not missing, f"README.md names paths that do not exist: {missing}"
