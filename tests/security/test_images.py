"""No secret in the images: what the build context holds, what the Dockerfile copies, what
compose passes.

The build context is evaluated with .dockerignore's own rules (patterns in order, the last
match wins, ``!`` re-includes, a matched directory covers everything below it), so the test
sees what ``docker build .`` would send, without Docker. tests/config/test_dockerfiles.py checks
the allowlist's shape; this checks its effect.
"""

import os
import re
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import pytest
import yaml

Scan = Callable[[Path, Iterable[str]], set[tuple[str, str, str]]]  # conftest.secret_scan

ROOT = Path(__file__).resolve().parents[2]
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN|_PASS$|WEBHOOK_URL|PRIVATE_KEY|API_KEY)")
# Files that must never reach a build context, wherever they are.
SECRET_FILES = [
    ".env", ".env.local", ".env.production", "api-svc/.env", "api-svc/src/.env",
    "processor-svc/src/processor_svc/.env", "service-kit/src/.env.prod",
    ".stack/secrets.json", "id_rsa", "api-svc/src/server.key", "api-svc/src/cert.pem",
    ".git/config", ".venv/pyvenv.cfg", ".pytest_cache/v/cache/nodeids",
]  # fmt: skip


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on /-paths."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):
                out += "/?"  # **/x also matches x at the top
                i += 1
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


@cache
def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether ``docker build .`` sends ``path`` (relative, /-separated)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in _rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negate
    return not excluded


def build_context() -> list[str]:
    files = []
    for directory, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in {".git", ".venv", "node_modules"}]
        for name in filenames:
            relative = os.path.relpath(os.path.join(directory, name), ROOT).replace(os.sep, "/")
            if in_build_context(relative):
                files.append(relative)
    return sorted(files)


def test_the_rules_are_read_like_docker_reads_them() -> None:
    assert in_build_context("uv.lock")
    assert in_build_context("api-svc/src/api_svc/main.py")
    assert in_build_context("processor-svc/pyproject.toml")
    assert not in_build_context("README.md")
    assert not in_build_context("docs/runbooks.md")
    assert not in_build_context("docs/swagger-ui-api-svc.png")
    assert not in_build_context("tests/e2e/conftest.py")
    assert not in_build_context("api-svc/src/api_svc/__pycache__/main.cpython-312.pyc")
    assert not in_build_context("api-svc/tests/conftest.py")


def test_the_build_context_holds_only_the_lock_pyprojects_and_sources() -> None:
    allowed = re.compile(
        r"(pyproject\.toml|uv\.lock"
        r"|(api-svc|processor-svc|service-kit|scripts/stackctl|testing/\w+)/pyproject\.toml"
        r"|(api-svc|processor-svc|service-kit)/src/.+)"
    )
    files = build_context()
    assert "uv.lock" in files
    assert [name for name in files if not allowed.fullmatch(name)] == []


@pytest.mark.parametrize("path", SECRET_FILES)
def test_secret_files_never_reach_the_build_context(path: str) -> None:
    assert not in_build_context(path), f"{path} would be sent to `docker build`"


def test_nothing_in_the_build_context_looks_like_a_secret(secret_scan: Scan) -> None:
    found = secret_scan(ROOT, build_context())
    # The one expected hit: the local-development default DATABASE_URL (see test_secrets.py).
    assert {(path, kind) for path, kind, _ in found} <= {
        ("api-svc/src/api_svc/config.py", "Basic Auth Credentials")
    }


def _instructions() -> list[tuple[str, str, str]]:
    """(stage, keyword, arguments) of every Dockerfile instruction (continuations joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage = ""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, keyword.upper(), rest.strip()))
    return out


def test_the_dockerfile_copies_no_secret_and_bakes_none_in() -> None:
    instructions = _instructions()
    for stage, keyword, rest in instructions:
        assert keyword != "ADD", "ADD can fetch URLs and unpack archives: COPY only"
        if keyword == "COPY":
            sources = [token for token in rest.split()[:-1] if not token.startswith("--")]
            for source in sources:
                assert not re.search(r"(^|/)\.env|secret|\.pem$|\.key$", source), source
                assert source not in {".", "./", "*"}, f"{stage}: copies the whole context"
        if keyword in {"ARG", "ENV"}:
            names = re.findall(r"([A-Z_][A-Z0-9_]*)=", rest) or [rest.split("=")[0]]
            for name in names:
                assert not SECRET_NAMES.search(name), f"{stage}: {keyword} {name} bakes a secret"
    # The images the services run are the runtime stage: it takes only the built virtualenv.
    runtime_copies = [
        rest for stage, kw, rest in instructions if stage == "runtime" and kw == "COPY"
    ]
    assert runtime_copies == ["--from=builder /app/.venv /app/.venv"]


def _password_of(url: str) -> str | None:
    """The password in a URL's user info (user, colon, password, at sign, host), each ``${...}``
    taken whole."""
    masked = re.sub(r"\$\{[^}]*\}", lambda m: "_" * len(m[0]), url)  # same offsets
    match = re.search(r"://([^/@]*)@", masked)
    if match is None or ":" not in match[1]:
        return None
    return url[masked.index(":", match.start(1)) + 1 : match.end(1)]


def test_compose_takes_every_secret_from_the_environment() -> None:
    """No secret value is written in docker-compose.yml: each is a required (``${X:?...}``) or
    empty-by-default (``${X:-}``) interpolation of .env, also inside database URLs."""
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    interpolation = r"\$\{[A-Z_][A-Z0-9_]*(?::\?[^}]*|:-)?\}"
    checked = []
    for name, service in document["services"].items():
        for key, value in (service.get("environment") or {}).items():
            text = str(value)
            if SECRET_NAMES.search(key):
                assert re.fullmatch(interpolation, text), f"{name}: {key}={text}"
                checked.append(key)
            if (password := _password_of(text)) is not None:
                assert re.fullmatch(interpolation, password), f"{name}: {key} holds a password"
                checked.append(key)
    assert len(checked) >= 6, checked
