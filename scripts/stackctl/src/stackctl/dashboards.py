"""The PromQL of the provisioned Grafana dashboards that the native twin must answer.

Panels that only have data in compose (Tempo's span metrics, pg_stat_statements, Loki) say so
in their description with ``COMPOSE_ONLY_MARK`` and are left out. ``substitute`` turns
Grafana's variables into plain PromQL (template variables match everything, interval
variables become fixed durations) so the end-to-end tests can run each query as is.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stackctl.addresses import REPO

DASHBOARDS = REPO / "observability/grafana/dashboards"
COMPOSE_ONLY_MARK = "(compose only)"
PROMETHEUS_UID = "prometheus"

_INTERVALS = {
    "$__rate_interval": "1m",
    "${__rate_interval}": "1m",
    "$__interval": "15s",
    "${__interval}": "15s",
    "$__range": "5m",
    "${__range}": "5m",
    "$__auto": "1m",
}
_VARIABLE = re.compile(r"\$\{?(\w+)(?::\w+)?\}?")
_LABEL_VALUES = re.compile(r"label_values\((.+),\s*\w+\)")


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # the panels of collapsed rows


def is_compose_only(panel: dict[str, Any]) -> bool:
    return COMPOSE_ONLY_MARK in panel.get("description", "")


def native_queries(path: Path) -> list[tuple[str, str]]:
    """(id, expression as written) of the Prometheus variables' selectors and every Prometheus
    target of every panel that is not compose-only."""
    dashboard = json.loads(path.read_text())
    queries: list[tuple[str, str]] = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        if (variable.get("datasource") or {}).get("uid") != PROMETHEUS_UID:
            continue  # Loki's label values: compose only, like the Loki panels
        raw = variable["query"]
        text = raw["query"] if isinstance(raw, dict) else raw
        match = _LABEL_VALUES.fullmatch(text.strip())
        if not match:
            raise ValueError(f"variable {variable['name']}: expected label_values(selector, label)")
        queries.append((f"var:{variable['name']}", match[1]))
    for panel in panels(dashboard):
        if panel.get("type") == "row" or is_compose_only(panel):
            continue
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("uid") == PROMETHEUS_UID and target.get("expr"):
                queries.append((f"panel{panel['id']}:{target['refId']}", str(target["expr"])))
    return queries


def substitute(expr: str) -> str:
    for variable, value in _INTERVALS.items():
        expr = expr.replace(variable, value)
    return _VARIABLE.sub(".+", expr)


def dashboard_queries(directory: Path = DASHBOARDS) -> list[tuple[str, str]]:
    """(dashboard:id, plain PromQL) for every dashboard in ``directory``."""
    return [
        (f"{path.stem}:{query_id}", substitute(expr))
        for path in sorted(directory.glob("*.json"))
        for query_id, expr in native_queries(path)
    ]
