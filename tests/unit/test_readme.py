"""The README is part of the product: its anchors and commands must match the repository."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _anchors() -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", README, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_alert_runbook_link_has_its_section() -> None:
    anchors = _anchors()
    for path in sorted((ROOT / "observability/prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule["annotations"]["runbook_url"]
                anchor = url.rsplit("#", 1)[1]
                assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"


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
