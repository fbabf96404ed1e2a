"""Shared test fixtures and helpers for every member of the workspace.

The fixtures (``postgres_cluster``, ``owner_database_url``: a real PostgreSQL) come from
:mod:`testkit.plugin`, registered with pytest through this package's ``pytest11`` entry
point. The helpers are imported from here::

    from testkit import json_lines, metric_value, recorded_spans
"""

from pgcluster import PostgresCluster, create_cluster, free_port
from testkit.helpers import (
    RawResponse,
    drive,
    json_lines,
    metric_value,
    npm_dependencies,
    pipelined_get,
    pipelined_gets,
    query,
    recorded_spans,
    series_count,
    tool,
    until,
    wait_for,
)
from testkit.service import ServiceFailedError, ServiceProcess, start_service

__all__ = [
    "PostgresCluster",
    "RawResponse",
    "ServiceFailedError",
    "ServiceProcess",
    "create_cluster",
    "drive",
    "free_port",
    "json_lines",
    "metric_value",
    "npm_dependencies",
    "pipelined_get",
    "pipelined_gets",
    "query",
    "recorded_spans",
    "series_count",
    "start_service",
    "tool",
    "until",
    "wait_for",
]
