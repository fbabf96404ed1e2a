"""Shared by the security tests: one detect-secrets scan function."""

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from detect_secrets.core.secrets_collection import SecretsCollection
from detect_secrets.settings import default_settings, get_settings

Finding = tuple[str, str, str]  # (path, detector, sha1 of the value)
Scan = Callable[[Path, Iterable[str]], set[Finding]]


def scan(root: Path, paths: Iterable[str]) -> set[Finding]:
    """detect-secrets with its default plugins and filters over ``paths`` (under ``root``)."""
    collection = SecretsCollection(root=str(root))
    with default_settings():
        # Its default filters skip every file whose absolute path contains "swagger" (meant for
        # Swagger specs full of sample tokens). Here that would hide the Swagger UI code and
        # tests, and a checkout in a directory named like that would scan nothing at all.
        get_settings().disable_filters("detect_secrets.filters.heuristic.is_swagger_file")
        for path in paths:
            collection.scan_file(path)
    return {(path, secret.type, secret.secret_hash) for path, secret in collection}


@pytest.fixture(scope="session")
def secret_scan() -> Scan:
    return scan
