"""Prometheus on the native twin: targets, rules and every dashboard query against real data."""

import json
import re
from typing import Any

import httpx
import pytest

from stackctl.dashboards import dashboard_queries
from testkit import query, wait_for

# The scrape targets the native twin runs (Tempo, Loki, Grafana and Alloy only in compose).
CORE_JOBS = ("api-svc", "processor-svc", "node", "postgres", "nginx", "prometheus", "alertmanager")


def test_every_core_scrape_target_is_up(prometheus: httpx.Client) -> None:
    def all_up() -> dict[str, str] | None:
        targets = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        return health if all(health.get(job) == "up" for job in CORE_JOBS) else None

    health = wait_for(all_up, timeout=60)
    assert set(CORE_JOBS) <= set(health)


def test_every_rule_evaluates_without_error(
    prometheus: httpx.Client, mixed_load: list[int]
) -> None:
    assert mixed_load.count(200) > 1000

    def evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return (
            rules if all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) else None
        )

    rules = wait_for(evaluated, timeout=60)
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken
    assert len(rules) >= 5


def test_every_dashboard_query_returns_data(
    prometheus: httpx.Client, mixed_load: list[int]
) -> None:
    assert mixed_load
    # Variables' selectors included: each must offer values to pick from.
    queries = dashboard_queries()
    assert len(queries) >= 20
    empty = []
    for title, expr in queries:
        if not query(prometheus, expr):
            empty.append(f"{title}: {expr}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_recording_rules_see_the_services(prometheus: httpx.Client, mixed_load: list[int]) -> None:
    assert mixed_load
    rate = query(prometheus, "sum by (service) (rate(app_http_requests_total[1m]))")
    assert {sample["metric"]["service"] for sample in rate} == {"api-svc", "processor-svc"}


@pytest.mark.parametrize("job", ["api-svc", "processor-svc"])
def test_route_templates_not_paths_in_labels(prometheus: httpx.Client, job: str) -> None:
    routes = query(prometheus, f'count by (route) (app_http_requests_total{{job="{job}"}})')
    for sample in routes:
        route = sample["metric"]["route"]
        assert route == "unmatched" or not re.search(r"/\d+$", route), route
    assert json.dumps(routes)
