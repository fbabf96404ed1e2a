"""Every relative link and #anchor in README.md and docs/*.md resolves, as GitHub renders them.

The alerts' runbook_url annotations point into docs/runbooks.md: each must name a section there.
"""

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# README.md and docs/*.md, and the other Markdown files that may link into them.
DOCUMENTS = sorted(
    {*ROOT.glob("*.md"), *ROOT.glob("*/README.md"), *(ROOT / "docs").glob("*.md")},
    key=lambda path: path.relative_to(ROOT).as_posix(),
)
RUNBOOKS = ROOT / "docs/runbooks.md"
REPOSITORY_URL = "https://github.com/example/fastapi-observability-stack/blob/main/"

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
# [text](target) and ![alt](target); the target ends at whitespace or ")" (none of ours has
# either). Reference-style links are not used in these files.
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, punctuation dropped
    (letters, digits, spaces, hyphens and underscores stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub gives the headings of ``path`` (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(path.read_text()):
        match = re.match(r"^ {0,3}#{1,6} +(.+?)(?: +#+)? *$", line)
        if not match:
            continue
        base = slug(match[1])
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return frozenset(result)


def links(path: Path) -> Iterator[tuple[int, str]]:
    """Every link target outside code, with its line; link text may span lines."""
    lines = dict(prose_lines(path.read_text()))
    # Code lines blanked, so offsets still give line numbers; inline code removed in place.
    total = max(lines, default=0)
    prose = "\n".join(
        _INLINE_CODE.sub(lambda m: " " * len(m[0]), lines.get(n, "")) for n in range(1, total + 1)
    )
    for match in _LINK.finditer(prose):
        yield prose.count("\n", 0, match.start()) + 1, match[1]


def broken(path: Path, target: str) -> str | None:
    """Why ``target``, a link in ``path``, does not resolve; None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
        return None  # absolute (http:, https:, mailto:): not ours to check offline
    file_part, _, fragment = target.partition("#")
    destination = (path.parent / unquote(file_part)).resolve() if file_part else path
    if not destination.is_relative_to(ROOT):
        return f"{file_part} leaves the repository"
    if not destination.exists():
        return f"{file_part} does not exist"
    if fragment:
        if destination.suffix != ".md":
            return f"#{fragment} on a file that is not Markdown"
        if unquote(fragment) not in anchors(destination):
            return f"{destination.relative_to(ROOT)} has no heading #{fragment}"
    return None


def test_the_documents_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert {"README.md", "gateway/README.md", "docs/runbooks.md", "docs/performance.md"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{number}: ({target}) {reason}"
        for number, target in links(path)
        if (reason := broken(path, target)) is not None
    ]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_should(tmp_path: Path) -> None:
    # The checker itself: a missing file, a missing anchor and GitHub's slug rules.
    assert slug("Runbook: SLOAvailabilityFastBurn") == "runbook-sloavailabilityfastburn"
    assert slug("How it scales, and where it fails") == "how-it-scales-and-where-it-fails"
    assert slug("Swagger UI, with nothing from the internet") == (
        "swagger-ui-with-nothing-from-the-internet"
    )
    assert slug("What observability costs (`make bench`)") == "what-observability-costs-make-bench"
    assert slug("Scaling and name resolution: keep-alive pools, resolved at (re)load") == (
        "scaling-and-name-resolution-keep-alive-pools-resolved-at-reload"
    )
    readme = ROOT / "README.md"
    assert broken(readme, "docs/runbooks.md#runbook-servicedown") is None
    assert broken(readme, "docs/no-such-file.md") is not None
    assert broken(readme, "docs/runbooks.md#runbook-nosuchalert") is not None
    assert broken(readme, "#no-such-section") is not None
    assert broken(readme, "https://example.com/#anything") is None
    page = tmp_path / "page.md"
    page.write_text("# Same\n\n## Same\n\n```sh\n# not a heading\n```\n")
    assert anchors(page) == {"same", "same-1"}
    text = (
        "[a](x.md) `[not](a-link.md)`\n```\n[not](either.md)\n```\n"
        "![img](y.png) [two\nlines](z.md)\n"
    )
    page.write_text(text)
    assert list(links(page)) == [(1, "x.md"), (5, "y.png"), (5, "z.md")]


def _alert_rules() -> Iterator[dict[str, object]]:
    for path in sorted((ROOT / "observability/prometheus/rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from (rule for rule in group["rules"] if "alert" in rule)


def test_every_alert_runbook_link_has_its_section() -> None:
    rules = list(_alert_rules())
    assert len(rules) >= 10
    for rule in rules:
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        url = annotations["runbook_url"]
        assert url.startswith(REPOSITORY_URL), url
        target = url.removeprefix(REPOSITORY_URL)
        assert target.partition("#")[0] == "docs/runbooks.md", f"{rule['alert']}: {url}"
        assert broken(ROOT / "README.md", target) is None, f"{rule['alert']}: {url}"


def test_every_runbook_section_belongs_to_an_alert() -> None:
    alerts = {f"runbook-{str(rule['alert']).lower()}" for rule in _alert_rules()}
    sections = {anchor for anchor in anchors(RUNBOOKS) if anchor.startswith("runbook-")}
    assert sections == alerts
