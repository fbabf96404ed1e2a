"""`.gitattributes`: scripts and configs keep LF line ends on every checkout.

A Windows checkout with `core.autocrlf=true` would otherwise write CRLF, and busybox `sh`
(observability/alertmanager/render-config.sh in the Alertmanager image), bash, nginx and
the YAML/Alloy parsers would then read a stray `\\r` on every line.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def git(*args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def attributes(name: str, paths: list[str]) -> dict[str, str]:
    """`git check-attr <name>` of each path (unspecified, set, unset or a value)."""
    out = git("check-attr", "-z", name, "--", *paths)
    fields = out.split("\0")[:-1]
    return {fields[i]: fields[i + 2] for i in range(0, len(fields), 3)}


def tracked() -> list[str]:
    return [path for path in git("ls-files", "-z").split("\0") if path]


def test_the_alertmanager_entrypoint_is_checked_out_with_lf() -> None:
    path = "observability/alertmanager/render-config.sh"
    assert path in tracked()
    assert attributes("eol", [path]) == {path: "lf"}


def test_every_tracked_text_file_is_checked_out_with_lf() -> None:
    paths = tracked()
    # Shell scripts with and without an extension, and every kind of config shipped here.
    for needed in (".ci/run", "scripts/install-deps", "Makefile", "Dockerfile",
                   "gateway/nginx.conf", "observability/alloy/config.alloy",
                   "docker-compose.yml", ".env.example"):  # fmt: skip
        assert needed in paths, needed
    eol = attributes("eol", paths)
    text = attributes("text", paths)
    wrong = sorted(p for p in paths if eol[p] != "lf" and text[p] != "unset")
    assert wrong == []


def test_a_windows_checkout_writes_lf(tmp_path: Path) -> None:
    """What `git clone` with `core.autocrlf=true` writes, from the index, for the scripts."""
    paths = ["observability/alertmanager/render-config.sh", ".ci/run", "Makefile"]
    git("-c", "core.autocrlf=true", "checkout-index", f"--prefix={tmp_path}/", "--", *paths)
    for path in paths:
        data = (tmp_path / path).read_bytes()
        assert b"\n" in data, path
        assert b"\r" not in data, f"{path} checked out with CRLF"


@pytest.mark.parametrize("path", ["docs/screenshot.png", "x.jpg", "x.ico", "x.gz", "x.pdf"])
def test_binary_files_are_never_converted(path: str) -> None:
    # A rule that does not exist yet for a file that does not exist yet: check-attr reads
    # the patterns only.
    assert attributes("text", [path]) == {path: "unset"}
    assert attributes("diff", [path]) == {path: "unset"}
