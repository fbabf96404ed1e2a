"""Dependencies point one way: product -> test kit, never product -> tooling.

The services (api-svc, processor-svc), the shared `service-kit` package and the test
infrastructure under testing/ (testkit, pgcluster) import nothing from the tooling
(`stackctl`), tests included, and do not declare it. The tooling, in turn, does not need
pytest to run. docs/testing.md explains the layout.
"""

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Everything that must work without the tooling installed.
INDEPENDENT = ("api-svc", "processor-svc", "service-kit", "testing")
MEMBERS = {
    "api-svc": "api-svc",
    "processor-svc": "processor-svc",
    "service-kit": "service-kit",
}
TOOLING = "scripts/stackctl"
NAME = re.compile(r"^[A-Za-z0-9._-]+")


def _imports(source: str, filename: str = "<test>") -> Iterator[tuple[int, str]]:
    """(line, module) for every import, and for every string naming a module of the
    tooling (``pytest_plugins = ["stackctl..."]``, ``importlib.import_module("stackctl")``)."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"stackctl(\.\w+)*", node.value)
        ):
            yield node.lineno, node.value


def _imports_of(module: str, source: str) -> list[int]:
    return sorted(line for line, name in _imports(source) if name.split(".")[0] == module)


def _python_files(directory: str) -> list[Path]:
    files = [
        path
        for path in sorted((ROOT / directory).rglob("*.py"))
        if not {".venv", "__pycache__", "node_modules"} & set(path.parts)
    ]
    assert files, f"no Python files under {directory}/"
    return files


def _requirement_names(pyproject: Path) -> dict[str, set[str]]:
    """Requirement names per table: dependencies, each optional extra, each group."""
    data: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    project = data.get("project", {})
    tables = {"dependencies": project.get("dependencies", [])}
    tables |= {f"extra {k}": v for k, v in project.get("optional-dependencies", {}).items()}
    tables |= {f"group {k}": v for k, v in data.get("dependency-groups", {}).items()}
    names: dict[str, set[str]] = {}
    for table, requirements in tables.items():
        found = (NAME.match(r) for r in requirements if isinstance(r, str))
        names[table] = {m[0].lower().replace("_", "-") for m in found if m}
    return names


def test_the_scan_finds_every_spelling_of_an_import() -> None:
    # The check below must not pass because it cannot see an import.
    source = "\n".join(
        (
            "import stackctl",
            "import stackctl.testing as t",
            "from stackctl.postgres import PostgresCluster",
            "pytest_plugins = ['stackctl.pytest_plugin']",
            "def f():\n    from stackctl import native",
            "import importlib; importlib.import_module('stackctl.ports')",
        )
    )
    assert _imports_of("stackctl", source) == [1, 2, 3, 4, 6, 7]
    assert _imports_of("stackctl", '"""Run by stackctl up."""\nimport stackctlx') == []


@pytest.mark.parametrize("directory", INDEPENDENT)
def test_product_and_test_kit_import_nothing_from_the_tooling(directory: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files(directory)
        for line in _imports_of("stackctl", path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"imports stackctl (the tooling): {offenders}"


@pytest.mark.parametrize("directory", INDEPENDENT)
def test_product_and_test_kit_do_not_declare_the_tooling(directory: str) -> None:
    pyprojects = sorted((ROOT / directory).rglob("pyproject.toml"))
    assert pyprojects
    for pyproject in pyprojects:
        for table, names in _requirement_names(pyproject).items():
            assert "stackctl" not in names, f"{pyproject.relative_to(ROOT)} [{table}]"


@pytest.mark.parametrize(("member", "directory"), MEMBERS.items())
def test_each_member_declares_what_its_tests_need(member: str, directory: str) -> None:
    pyproject = ROOT / directory / "pyproject.toml"
    names = _requirement_names(pyproject)
    assert tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"] == member
    assert {"pytest", "testkit"} <= names.get("group dev", set()), pyproject
    # The kit is for tests only: never a runtime dependency of the product.
    assert "testkit" not in names["dependencies"], pyproject


def test_fixtures_are_not_loaded_by_the_root_configuration() -> None:
    # A member's tests get the fixtures from its own dev group (testkit's pytest11 entry
    # point), so they work without the root pyproject's addopts naming a plugin.
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    addopts = root["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-p" not in addopts
    assert not any(str(option).startswith("-p") for option in addopts), addopts
    kit = tomllib.loads((ROOT / "testing/testkit/pyproject.toml").read_text(encoding="utf-8"))
    assert kit["project"]["entry-points"]["pytest11"] == {"testkit": "testkit.plugin"}


def test_the_tooling_does_not_need_pytest_at_run_time() -> None:
    names = _requirement_names(ROOT / TOOLING / "pyproject.toml")["dependencies"]
    assert not {"pytest", "testkit"} & names, names
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _python_files(f"{TOOLING}/src")
        for module in ("pytest", "testkit")
        for line in _imports_of(module, path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"the tooling imports test-only packages: {offenders}"
