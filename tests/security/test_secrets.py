"""No secret in the repository: detect-secrets (PyPI) over every tracked file and its history.

Every finding must be on the allowlist below, where each entry says why the value is not a
secret (test fixtures, the example values of a test). An allowlist entry that no longer matches
anything fails too, so the list cannot rot. Findings are matched by detect-secrets' hash of the
value, never by line number (the hashes below carry detect-secrets' inline pragma, since they
look like secrets themselves).
"""

import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (path, detector, sha1 of the value as detect-secrets reports it) -> why it is no secret.
ALLOWED: dict[tuple[str, str, str], str] = {
    (
        "api-svc/src/api_svc/config.py",
        "Basic Auth Credentials",
        "0887f3cdaaa13f9c299ac2acec09a39d8be93c01",  # pragma: allowlist secret
    ): "the local-development default DATABASE_URL (api_reader:api_reader@127.0.0.1); compose "
    "and the native twin always set DATABASE_URL with a random password",
    (
        "api-svc/tests/conftest.py",
        "Secret Keyword",
        "0ba72bd483bb4cc572489d5634c3939c53d75633",  # pragma: allowlist secret
    ): "the password of the read-only role in the tests' throwaway PostgreSQL cluster",
    (
        "tests/config/test_compose.py",
        "Secret Keyword",
        "1961ef4c41efd6df381aa7bc6e8377a4cc0db017",  # pragma: allowlist secret
    ): "a made-up Grafana password the compose test interpolates",
    (
        "tests/config/test_observability_config.py",
        "Slack Token",
        "e7d875044d7c127f7d9500f1037d3070c908e4ed",  # pragma: allowlist secret
    ): "a syntactically valid, fake Slack webhook URL (T000/B000/XXXXXXXX)",
    (
        "tests/config/test_workflows.py",
        "Secret Keyword",
        "fef341f85d87439e7d91a2d465b9871ef66b5e98",  # pragma: allowlist secret
    ): "a made-up .env line in the compose smoke script's parser test",
}


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


Scan = Callable[[Path, Iterable[str]], set[tuple[str, str, str]]]  # conftest.secret_scan


def test_the_scanner_finds_a_planted_secret(tmp_path: Path, secret_scan: Scan) -> None:
    """The scan below is not vacuous: the same call finds a key that looks real."""
    planted = "AKIA" + "Z7QK3JX9" + "TESTONLY"  # split, so this file itself holds no key
    (tmp_path / "settings.py").write_text(f'aws_access_key_id = "{planted}"\n')
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=" + "6f1c2a9e" * 4 + "\n")
    # detect-secrets would skip this one by default (its name says swagger); conftest stops it.
    (tmp_path / "swagger-ui-init.js").write_text(f'const key = "{planted}";\n')
    found = secret_scan(tmp_path, ["settings.py", ".env", "swagger-ui-init.js"])
    assert {(path, kind) for path, kind, _ in found} >= {
        ("settings.py", "AWS Access Key"),
        (".env", "Secret Keyword"),
        ("swagger-ui-init.js", "AWS Access Key"),
    }


def test_no_secret_in_the_tracked_files(secret_scan: Scan) -> None:
    found = secret_scan(ROOT, _tracked_files())
    unexpected = sorted(found - ALLOWED.keys())
    assert not unexpected, (
        "secrets in tracked files (remove them, or allowlist with a reason):\n"
        + ("\n".join(f"  {path}: {kind} ({digest})" for path, kind, digest in unexpected))
    )
    stale = sorted(ALLOWED.keys() - found)
    assert not stale, f"allowlist entries that match nothing any more: {stale}"


def _history_blobs() -> dict[str, str]:
    """Every file version in the repository's history: blob id -> a path it had."""
    out = subprocess.run(
        ["git", "rev-list", "--all", "--objects"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=120,
        text=True,
    ).stdout
    blobs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, path = line.partition(" ")
        if path:
            blobs.setdefault(sha, path)
    kinds = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        cwd=ROOT,
        input="\n".join(blobs),
        capture_output=True,
        check=True,
        timeout=120,
        text=True,
    ).stdout
    keep = {sha for sha, kind in (line.split() for line in kinds.splitlines()) if kind == "blob"}
    return {sha: path for sha, path in blobs.items() if sha in keep}


@pytest.mark.timeout(600)
def test_no_secret_anywhere_in_the_history(secret_scan: Scan) -> None:
    """A secret committed once and deleted later is still in every clone: scan every version."""
    blobs = _history_blobs()
    allowed = {(kind, digest) for _, kind, digest in ALLOWED}
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        names = {}
        for sha, path in blobs.items():
            content = subprocess.run(
                ["git", "cat-file", "blob", sha], cwd=ROOT, capture_output=True, check=True
            ).stdout
            target = root / sha / Path(path).name  # the file name steers detect-secrets' filters
            target.parent.mkdir()
            target.write_bytes(content)
            names[str(target.relative_to(root))] = path
        found = secret_scan(root, names)
    unexpected = sorted(
        (names[name], kind, digest) for name, kind, digest in found if (kind, digest) not in allowed
    )
    assert not unexpected, "secrets in the git history (rotate them, then rewrite history):\n" + (
        "\n".join(f"  {path}: {kind} ({digest})" for path, kind, digest in unexpected)
    )
