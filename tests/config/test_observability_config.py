"""Validation of the observability stack configuration (the files under observability/).

What runs here for real: promtool (check config, check rules, rule unit tests), amtool
(check-config, routing tree), Debian's Alertmanager (inhibition), the PromQL, LogQL and
TraceQL grammars of Prometheus and Grafana (npm, tests/config/grammar/). Loki, Tempo, Alloy
and Grafana cannot run on this machine: their files are checked statically against the keys
the stack relies on.

Compose-only dashboard panels: a panel whose `description` contains "(compose only)" needs a
component the native twin does not run here (Loki, Tempo and its span metrics). Every other
Prometheus query of the dashboard must evaluate and return data on the native stack;
`native_prometheus_queries()` lists exactly those (the native end-to-end test evaluates them),
COMPOSE_ONLY_PANELS says why each marked panel is skipped.

Every config is also checked after the native twin's only rewrite (`<compose-service>:<port>`
-> `127.0.0.1:<port>`). A missing tool makes the tests that need it fail, never skip.

Run: python -m pytest -p no:cacheprovider -o addopts="" tests/config/test_observability_config.py -q
Needs: pytest, pyyaml; promtool, amtool, prometheus-alertmanager (Debian), sh, node + npm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackctl import dashboards
from testkit import npm_dependencies, tool

REPO_ROOT = Path(__file__).resolve().parents[2]
OBS = REPO_ROOT / "observability"
PROM_DIR = OBS / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES_DIR = PROM_DIR / "rules"
ALERTS_FILE = RULES_DIR / "alerts.yml"
RECORDING_FILE = RULES_DIR / "recording.yml"
SLO_FILE = RULES_DIR / "slo.yml"
THRESHOLDS_FILE = RULES_DIR / "thresholds.yml"
PROM_RENDER = PROM_DIR / "render-config.sh"
RULE_TESTS = PROM_DIR / "tests" / "alerts_test.yml"
SLO_RULE_TESTS = PROM_DIR / "tests" / "slo_test.yml"
RULE_TEST_FILES = (RULE_TESTS, SLO_RULE_TESTS)
AM_DIR = OBS / "alertmanager"
AM_CONFIG = AM_DIR / "alertmanager.yml"
AM_RENDER = AM_DIR / "render-config.sh"
LOKI_CONFIG = OBS / "loki" / "loki-config.yml"
TEMPO_CONFIG = OBS / "tempo" / "tempo.yml"
ALLOY_CONFIG = OBS / "alloy" / "config.alloy"
GRAFANA_DIR = OBS / "grafana"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDER = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
OVERVIEW = DASHBOARDS_DIR / "services-overview.json"
GRAMMAR_DIR = Path(__file__).resolve().parent / "grammar"

RUNBOOK_BASE = "https://github.com/example/fastapi-observability-stack/blob/main/docs/runbooks.md"
SEVERITIES = {"page", "ticket", "warning"}
ALERT_NAMES = {
    "ServiceDown",
    "PostgresDown",
    "HighPostgresTPS",
    "HighLatency",
    "HighErrorRate",
    "HostHighCpuUsage",
    "HostHighMemoryUsage",
    "HostHighDiskUsage",
    "SLOAvailabilityFastBurn",
    "SLOAvailabilitySlowBurn",
    "SLOLatencyFastBurn",
    "SLOLatencySlowBurn",
}
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Multi-window multi-burn-rate pairs (SRE workbook): alert -> {(long, short, burn rate)}.
BURN_RATE_PAIRS = {
    "FastBurn": {("1h", "5m", 14.4), ("6h", "30m", 6.0)},
    "SlowBurn": {("1d", "2h", 3.0), ("3d", "6h", 1.0)},
}
# Bucket boundaries of the services' histograms (contract).
HISTOGRAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)
DATASOURCE_UIDS = {"prometheus", "loki", "tempo", "alertmanager"}

# Compose service names that config files may address as `<name>:<port>` (contract). The
# native twin rewrites exactly these to 127.0.0.1:<port>.
COMPOSE_SERVICES = (
    "gateway",
    "api-svc",
    "processor-svc",
    "postgres",
    "prometheus",
    "alertmanager",
    "alert-webhook",
    "node-exporter",
    "postgres-exporter",
    "nginx-exporter",
    "loki",
    "tempo",
    "grafana",
    "alloy",
)
NAME_PORT = re.compile(
    r"(?<![\w.-])(" + "|".join(re.escape(name) for name in COMPOSE_SERVICES) + r"):(\d{2,5})\b"
)

# Scrape jobs of the contract: job -> target.
CORE_JOBS = {
    "api-svc": "api-svc:9000",
    "processor-svc": "processor-svc:9001",
    "node": "node-exporter:9100",
    "postgres": "postgres-exporter:9187",
    "nginx": "nginx-exporter:9113",
    "prometheus": "prometheus:9090",
    "alertmanager": "alertmanager:9093",
}
COMPOSE_ONLY_JOBS = {
    "tempo": "tempo:3200",
    "loki": "loki:3100",
    "grafana": "grafana:3000",
    "alloy": "alloy:12345",
}

# Metric names the dashboard and the rules may use: the services' own (contract), and the
# exporters' as exposed by Debian's node exporter 1.5 / postgres exporter 0.11 / nginx
# exporter 0.11 (checked against running binaries) and by their current compose versions
# (NATIVE_EXPORTER_METRICS), plus those that exist in compose only (COMPOSE_ONLY_METRICS).
APP_METRICS = {
    "app_http_requests_total",
    "app_http_request_duration_seconds_bucket",
    "app_http_request_duration_seconds_sum",
    "app_http_request_duration_seconds_count",
    "app_http_requests_in_flight",
    "app_exceptions_total",
    "app_build_info",
    "app_message_lookups_total",
    "app_message_search_duration_seconds_bucket",
    "app_message_search_duration_seconds_sum",
    "app_message_search_duration_seconds_count",
    "app_processed_payload_bytes_total",
}
NATIVE_EXPORTER_METRICS = {
    "up",
    "ALERTS",
    "nginx_up",
    "nginx_http_requests_total",
    "nginx_connections_active",
    "nginx_connections_reading",
    "nginx_connections_writing",
    "nginx_connections_waiting",
    "nginx_connections_accepted",
    "nginx_connections_handled",
    "pg_up",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_numbackends",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
    "pg_stat_database_deadlocks",
    "pg_stat_database_temp_files",
    "pg_database_size_bytes",
    "pg_settings_max_connections",
    "node_cpu_seconds_total",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    # postgres-exporter --collector.stat_statements (on Debian 12's 0.11, the twin's custom
    # query of the same two series: stackctl/pg_stat_statements.yml).
    "pg_stat_statements_seconds_total",
    "pg_stat_statements_calls_total",
}
COMPOSE_ONLY_METRICS = {
    # Tempo's metrics-generator (span metrics, remote-written to Prometheus).
    "traces_spanmetrics_latency_bucket",
    "traces_spanmetrics_calls_total",
}
EXPORTER_METRICS = NATIVE_EXPORTER_METRICS | COMPOSE_ONLY_METRICS

# The compose-only convention of the dashboards: the marker in a panel's description, and
# every marked panel of services-overview.json with the reason it cannot run natively.
COMPOSE_ONLY_MARKER = "(compose only)"
COMPOSE_ONLY_PANELS = {
    "Server span latency by route, exemplars link to traces": (
        "traces_spanmetrics_* (with exemplars) come from Tempo's metrics-generator"
    ),
    "Slowest recent traces": "Tempo data source (TraceQL search)",
    "Log lines per second by level": "Loki data source",
    "Error and warning lines": "Loki data source",
    "Service logs": "Loki data source",
}

TOOL_TIMEOUT = 120


# --------------------------------------------------------------------------- helpers


def run(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def native_rewrite(text: str) -> str:
    """The native twin's only change: `<compose-service>:<port>` -> `127.0.0.1:<port>`."""
    return NAME_PORT.sub(r"127.0.0.1:\2", text)


def config_files() -> list[Path]:
    """Every file under observability/ (the stack's configuration)."""
    files = []
    for path in sorted(OBS.rglob("*")):
        if not path.is_file():
            continue
        if "node_modules" in path.parts:
            continue
        files.append(path)
    return files


def rule_files() -> list[Path]:
    """Every rule file Prometheus loads (`rule_files: [rules/*.yml]`)."""
    return sorted(RULES_DIR.glob("*.yml"))


def all_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in rule_files()
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def recording_rules() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "record" in rule]


def rule_tests() -> list[dict[str, Any]]:
    """The test cases of every promtool rule-test file."""
    return [case for path in RULE_TEST_FILES for case in load_yaml(path)["tests"]]


def duration_seconds(text: str) -> float:
    """A Prometheus duration such as `1m`, `75s`, `5m15s`, `1h` in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts, f"bad duration {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(int(number) * units[unit] for number, unit in parts)


def load_dashboard(path: Path = OVERVIEW) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def datasources() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = load_yaml(DATASOURCES)["datasources"]
    return items


def grafana_to_plain(expr: str) -> str:
    """Replace Grafana's template variables so that the query is plain PromQL/LogQL."""
    expr = expr.replace("$$", "$")  # provisioning files escape `$` as `$$`
    expr = re.sub(r"\$\{__tags\}|\$__tags", 'service="api-svc"', expr)
    expr = re.sub(r"\$\{__trace\.traceId\}", "0af7651916cd43dd8448eb211c80319c", expr)
    expr = re.sub(r"\$\{__field\.labels\.\w+\}", "api-svc", expr)
    expr = re.sub(r"\$\{?__(rate_interval|interval|auto|range)\}?", "1m", expr)
    return re.sub(r"\$\{\w+(?::\w+)?\}|\$\w+", ".+", expr)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels of collapsed rows


def ds_lang(datasource: dict[str, Any] | None) -> str:
    uid = (datasource or {}).get("uid")
    return {"prometheus": "promql", "loki": "logql", "tempo": "traceql"}.get(str(uid), "unknown")


def target_expr(target: dict[str, Any]) -> str:
    """The query text of a panel target (`expr` for Prometheus/Loki, `query` for Tempo)."""
    return str(target.get("expr") or target.get("query") or "")


def is_compose_only(panel: dict[str, Any]) -> bool:
    return COMPOSE_ONLY_MARKER in panel.get("description", "")


def explore_panes(url: str) -> dict[str, Any]:
    """The `panes` JSON of a Grafana Explore link (data links of the dashboard)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.path == "/explore", url
    params = urllib.parse.parse_qs(parsed.query)
    assert params["schemaVersion"] == ["1"], url
    panes: dict[str, Any] = json.loads(params["panes"][0])
    return panes


def data_links(panel: dict[str, Any]) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    return links


def native_prometheus_queries(path: Path = OVERVIEW) -> list[tuple[str, str]]:
    """(id, expression as written) of every Prometheus query the native twin must answer
    (the end-to-end tests evaluate exactly these, through the same function)."""
    return dashboards.native_queries(path)


def link_queries(stem: str, panel: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, language, plain expression) of the queries of a panel's Explore data links."""
    return [
        (
            f"{stem}:panel{panel['id']}:link{index}:{query['refId']}",
            ds_lang(query["datasource"]),
            grafana_to_plain(target_expr(query)),
        )
        for index, link in enumerate(data_links(panel))
        if link["url"].startswith("/explore")
        for pane in explore_panes(link["url"]).values()
        for query in pane["queries"]
    ]


def all_queries() -> list[tuple[str, str, str]]:
    """(id, language, plain expression) of every query this stack ships."""
    queries: list[tuple[str, str, str]] = [
        (f"recording:{rule['record']}", "promql", rule["expr"]) for rule in recording_rules()
    ]
    for index, rule in enumerate(alert_rules()):
        queries.append((f"alert:{rule['alert']}#{index}", "promql", rule["expr"]))
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = load_dashboard(path)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                lang = ds_lang(target.get("datasource") or panel.get("datasource"))
                queries.append(
                    (
                        f"{path.stem}:panel{panel['id']}:{target['refId']}",
                        lang,
                        grafana_to_plain(target_expr(target)),
                    )
                )
            queries.extend(link_queries(path.stem, panel))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text.strip())
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            lang = ds_lang(variable.get("datasource"))
            queries.append(
                (f"{path.stem}:var:{variable['name']}", lang, grafana_to_plain(match[1]))
            )
    for source in datasources():
        json_data = source.get("jsonData", {})
        for index, query in enumerate(json_data.get("tracesToMetrics", {}).get("queries", [])):
            queries.append(
                (f"datasource:tracesToMetrics#{index}", "promql", grafana_to_plain(query["query"]))
            )
        logs = json_data.get("tracesToLogsV2", {})
        if logs.get("customQuery"):
            queries.append(("datasource:tracesToLogsV2", "logql", grafana_to_plain(logs["query"])))
    return queries


@pytest.fixture(scope="module")
def grammar_results() -> dict[str, dict[str, Any]]:
    """Parse every query once with the Lezer grammars (npm ci when a dependency is missing)."""
    node = tool("node", "nodejs")
    npm_dependencies(GRAMMAR_DIR)
    items = [{"id": qid, "lang": lang, "expr": expr} for qid, lang, expr in all_queries()]
    result = run([node, "check-queries.mjs"], cwd=GRAMMAR_DIR, stdin=json.dumps(items))
    assert result.returncode in (0, 1), f"grammar checker failed:\n{result.stderr}"
    return {item["id"]: item for item in json.loads(result.stdout)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - fixed http://127.0.0.1 URL
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        payload = response.read()
    return json.loads(payload) if payload else None


# --------------------------------------------------------------------------- all files


@pytest.mark.parametrize(
    "path",
    [p for p in config_files() if p.suffix in {".yml", ".yaml"}],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_yaml_files_parse(path: Path) -> None:
    document = load_yaml(path)
    assert isinstance(document, dict), f"{path} is empty or not a mapping"
    # ... and still parse after the native twin's rewrite.
    assert isinstance(yaml.safe_load(native_rewrite(path.read_text(encoding="utf-8"))), dict)


@pytest.mark.parametrize(
    "path", sorted(DASHBOARDS_DIR.glob("*.json")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_dashboard_json_parses(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["panels"], "dashboard without panels"


def test_config_files_address_components_by_compose_name() -> None:
    """Contract: configs say `<service>:<port>`; only the native twin turns them into 127.0.0.1."""
    offenders = []
    for path in config_files():
        if path.suffix not in {".yml", ".yaml", ".alloy", ".json", ".sh"}:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith(("#", "//")):
                continue  # comments may explain the rewrite
            if "localhost" in line:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
            # Loki's ring member address and Tempo's memberlist (a single binary gossips with
            # itself) are their own process, the same in compose and natively.
            own_process = (path == LOKI_CONFIG and "instance_addr" in line) or (
                path.name == "tempo.yml" and "bind_addr" in line
            )
            if "127.0.0.1" in line and not own_process:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "hard-coded local addresses:\n" + "\n".join(offenders)


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrape_jobs_match_contract() -> None:
    config = load_yaml(PROM_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    jobs = {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    expected = {**CORE_JOBS, **COMPOSE_ONLY_JOBS}
    assert set(jobs) == set(expected)
    for name, target in expected.items():
        assert jobs[name] == [target], f"job {name}"
    alertmanagers = config["alerting"]["alertmanagers"]
    assert [t for am in alertmanagers for sc in am["static_configs"] for t in sc["targets"]] == [
        "alertmanager:9093"
    ]
    assert config["rule_files"] == ["rules/*.yml"]


def test_promtool_check_config(tmp_path: Path) -> None:
    promtool = tool("promtool")
    assert_ok(run([promtool, "check", "config", str(PROM_CONFIG)]))
    # The native twin's copy: same files, `<service>:<port>` rewritten.
    native = tmp_path / "prometheus"
    shutil.copytree(PROM_DIR, native)
    for path in native.rglob("*.yml"):
        path.write_text(native_rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    assert "api-svc:9000" not in (native / "prometheus.yml").read_text(encoding="utf-8")
    assert "127.0.0.1:9000" in (native / "prometheus.yml").read_text(encoding="utf-8")
    assert_ok(run([promtool, "check", "config", str(native / "prometheus.yml")]))


def test_promtool_check_rules() -> None:
    promtool = tool("promtool")
    files = sorted(str(p) for p in RULES_DIR.glob("*.yml"))
    assert len(files) >= 2
    assert_ok(run([promtool, "check", "rules", *files]))


@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_promtool_rule_unit_tests(path: Path) -> None:
    promtool = tool("promtool")
    result = run([promtool, "test", "rules", str(path.relative_to(REPO_ROOT))], cwd=REPO_ROOT)
    assert_ok(result)
    assert "SUCCESS" in result.stdout + result.stderr


def test_rule_tests_load_every_rule_file() -> None:
    loaded = {
        (path.parent / name).resolve()
        for path in RULE_TEST_FILES
        for name in load_yaml(path)["rule_files"]
    }
    assert loaded == {path.resolve() for path in rule_files()}


def test_every_alert_is_unit_tested() -> None:
    """Each alert: a case where it fires, one where it must not, and its `for` boundary.

    The boundary: in one test case, a check at most 1 minute before a firing check expects
    nothing (pending only), so the rule's `for` is what holds the alert back.
    """
    assert {rule["alert"] for rule in alert_rules()} == ALERT_NAMES
    cases = rule_tests()
    for name in ALERT_NAMES:
        checks = [
            check
            for case in cases
            for check in case.get("alert_rule_test", [])
            if check["alertname"] == name
        ]
        assert any(check.get("exp_alerts") for check in checks), f"{name}: never fires"
        assert any(not check.get("exp_alerts") for check in checks), (
            f"{name}: no case where it must not fire"
        )
        boundaries = []
        for case in cases:
            times = {
                duration_seconds(c["eval_time"]): bool(c.get("exp_alerts"))
                for c in case.get("alert_rule_test", [])
                if c["alertname"] == name
            }
            boundaries += [
                t for t, fires in times.items()
                if fires and any(not f and 0 < t - u <= 60 for u, f in times.items())
            ]  # fmt: skip
        assert boundaries, f"{name}: no test of the `for` boundary"


@pytest.mark.parametrize(
    "index", range(len(alert_rules())), ids=lambda i: alert_rules()[i]["alert"]
)
def test_alert_rule_metadata(index: int) -> None:
    rule = alert_rules()[index]
    name = rule["alert"]
    assert rule["labels"]["severity"] in SEVERITIES
    assert "for" in rule, f"{name}: alerts need a `for` duration"
    assert duration_seconds(rule["for"]) >= 60, f"{name}: `for` below 1m cannot be tested at for-1m"
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert re.search(r"\{\{\s*\$value\s*\|\s*humanize\w*\s*\}\}", annotations["description"]), (
        f"{name}: description must show the humanized $value"
    )
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#runbook-{name.lower()}"
    # Alertmanager groups and inhibits by `service`: a label, kept by the expression's
    # aggregation, or carried by the SLO recording rules it reads (all `by (service)`).
    assert (
        "service" in rule["labels"]
        or re.search(r"\bby \([^)]*\bservice\b", rule["expr"])
        or re.search(r"\bslo:sli_error:ratio_rate\w+\{", rule["expr"])
    ), f"{name}: no `service` label"


# --------------------------------------------------------------------------- thresholds

# The one setting of each user-adjustable threshold: rule file line marker -> recorded series.
THRESHOLD_SETTINGS = {"POSTGRES_TPS_THRESHOLD": ("postgres:transactions_per_second:threshold", 100)}


def render_prometheus(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    shell = tool("sh")
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PROMETHEUS_RENDER_DIR": str(tmp_path / "rendered"),
        **env,
    }
    return run([shell, str(PROM_RENDER), f"--config.file={PROM_CONFIG}", *args], env=environment)


def test_thresholds_are_recorded_series_with_their_setting_named() -> None:
    rules = {r["record"]: r for g in load_yaml(THRESHOLDS_FILE)["groups"] for r in g["rules"]}
    text = THRESHOLDS_FILE.read_text(encoding="utf-8")
    for name, (record, default) in THRESHOLD_SETTINGS.items():
        assert rules[record]["expr"] == f"vector({default})"
        assert re.search(rf"^\s+expr: vector\({default}\)  # env: {name}$", text, re.MULTILINE)
    assert set(rules) == {record for record, _ in THRESHOLD_SETTINGS.values()}


def test_the_tps_alert_and_the_dashboard_read_the_same_threshold_series() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "HighPostgresTPS"]
    assert "postgres:transactions_per_second:threshold" in rule["expr"]
    assert re.search(r"\b100\b", rule["expr"]) is None, "the threshold is written in one place"
    assert 'datname="messages"' in rule["expr"]
    panel = panel_by_title("Transactions per second vs HighPostgresTPS threshold")
    exprs = [t["expr"] for t in panel["targets"]]
    rate = rule["expr"].split(">")[0].strip()
    assert [" ".join(e.split()) for e in exprs] == [
        " ".join(rate.split()),
        "postgres:transactions_per_second:threshold",
    ]


def test_render_without_settings_copies_the_rules_unchanged(tmp_path: Path) -> None:
    result = render_prometheus(tmp_path, "--render-only")
    assert_ok(result)
    rendered = Path(result.stdout.strip())
    assert rendered == tmp_path / "rendered" / "prometheus.yml"
    assert rendered.read_bytes() == PROM_CONFIG.read_bytes()
    copies = sorted((rendered.parent / "rules").glob("*.yml"))
    assert [p.name for p in copies] == [p.name for p in rule_files()]
    for copy in copies:
        assert copy.read_bytes() == (RULES_DIR / copy.name).read_bytes(), copy.name


def test_render_writes_the_threshold_and_the_alert_follows(tmp_path: Path) -> None:
    """POSTGRES_TPS_THRESHOLD=20: only the marked line changes, and 50 TPS, quiet with the
    default 100, fires HighPostgresTPS on the rendered rules."""
    result = render_prometheus(tmp_path, "--render-only", POSTGRES_TPS_THRESHOLD="20")
    assert_ok(result)
    assert "POSTGRES_TPS_THRESHOLD=20" in result.stderr
    rendered_rules = tmp_path / "rendered" / "rules"
    source = THRESHOLDS_FILE.read_text(encoding="utf-8").splitlines()
    copy = (rendered_rules / THRESHOLDS_FILE.name).read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(source, copy, strict=True) if a != b]
    assert changed == [
        (
            "        expr: vector(100)  # env: POSTGRES_TPS_THRESHOLD",
            "        expr: vector(20)  # env: POSTGRES_TPS_THRESHOLD",
        )
    ]
    promtool = tool("promtool")
    assert_ok(run([promtool, "check", "rules", *map(str, sorted(rendered_rules.glob("*.yml")))]))

    def unit_test(rules_dir: Path, fires: bool) -> dict[str, Any]:
        alert = {
            "exp_labels": {
                "alertname": "HighPostgresTPS", "severity": "warning", "service": "postgres",
                "datname": "messages",
            },
            "exp_annotations": {
                "summary": "PostgreSQL database messages: transaction rate above its threshold",
                "description": (
                    "The messages database has served 50 transactions per second (commits + "
                    "rollbacks, 5-minute average) for more than 10 minutes, above the "
                    "threshold of 20 (POSTGRES_TPS_THRESHOLD). Latency has not necessarily "
                    "suffered yet."
                ),
                "runbook_url": f"{RUNBOOK_BASE}#runbook-highpostgrestps",
            },
        }  # fmt: skip
        series = 'pg_stat_database_xact_{}{{job="postgres", instance="x:9187", datname="messages"}}'
        return {
            "rule_files": [str(rules_dir / name) for name in ("thresholds.yml", "alerts.yml")],
            "evaluation_interval": "15s",
            "tests": [
                {
                    "interval": "15s",
                    "input_series": [
                        {"series": series.format("commit"), "values": "0+750x80"},
                        {"series": series.format("rollback"), "values": "0x80"},
                    ],
                    # 50 TPS: the average of a new series climbs past 20 at about 2m, so
                    # pending at 10m, firing by 20m.
                    "alert_rule_test": [
                        {"eval_time": "10m", "alertname": "HighPostgresTPS", "exp_alerts": []},
                        {
                            "eval_time": "20m",
                            "alertname": "HighPostgresTPS",
                            "exp_alerts": [alert] if fires else [],
                        },
                    ],
                }
            ],
        }

    for rules_dir, fires in ((rendered_rules, True), (RULES_DIR, False)):
        path = tmp_path / f"tps-{fires}.yml"
        path.write_text(yaml.safe_dump(unit_test(rules_dir, fires)), encoding="utf-8")
        result = run([promtool, "test", "rules", str(path)])
        assert_ok(result)
        assert "SUCCESS" in result.stdout + result.stderr


@pytest.mark.parametrize("value", ["abc", "0", "0.0", "-5", "1e3", "10;rm -rf /", "1.2.3", ".5"])
def test_render_rejects_a_threshold_that_is_not_a_positive_number(
    tmp_path: Path, value: str
) -> None:
    result = render_prometheus(tmp_path, "--render-only", POSTGRES_TPS_THRESHOLD=value)
    assert result.returncode == 64, result.stderr
    assert "POSTGRES_TPS_THRESHOLD" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_render_refuses_a_setting_whose_rule_line_is_gone(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(PROM_DIR, source, ignore=shutil.ignore_patterns("tests"))
    thresholds = source / "rules" / THRESHOLDS_FILE.name
    thresholds.write_text(
        thresholds.read_text(encoding="utf-8").replace("  # env: POSTGRES_TPS_THRESHOLD", ""),
        encoding="utf-8",
    )
    shell = tool("sh")
    result = run(
        [shell, str(PROM_RENDER), f"--config.file={source / 'prometheus.yml'}", "--render-only"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PROMETHEUS_RENDER_DIR": str(tmp_path / "rendered"),
            "POSTGRES_TPS_THRESHOLD": "20",
        },
    )
    assert result.returncode == 64, result.stderr
    assert "# env: POSTGRES_TPS_THRESHOLD" in result.stderr


def test_render_runs_prometheus_on_the_rendered_copy(tmp_path: Path) -> None:
    result = render_prometheus(
        tmp_path, "--storage.tsdb.path=/prometheus", PROMETHEUS_BIN=tool("echo")
    )
    assert_ok(result)
    assert result.stdout.split() == [
        f"--config.file={tmp_path / 'rendered' / 'prometheus.yml'}",
        "--storage.tsdb.path=/prometheus",
    ]


# --------------------------------------------------------------------------- SLOs


def slo_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(SLO_FILE)["groups"] for rule in group["rules"]]


def test_slo_recording_rules_cover_every_window() -> None:
    """slo:sli_error:ratio_rate<W>{slo, service} for each alert window and both SLOs."""
    rules = slo_rules()
    for slo in ("availability", "latency"):
        for window in SLO_WINDOWS[1:]:
            matching = [
                r for r in rules
                if r.get("record") == f"slo:sli_error:ratio_rate{window}"
                and r.get("labels", {}).get("slo") == slo
            ]  # fmt: skip
            assert len(matching) == 1, f"{slo} {window}"
            expr = matching[0]["expr"]
            # Every range of the rule is its window, and the SLI keeps `service`.
            assert set(re.findall(r"\[(\w+)\]", expr)) == {window}, f"{slo} {window}: {expr}"
            assert "by (service)" in expr
            assert 'route!~"/health|/ready"' in expr, f"{slo} {window}: probes must not count"
        # 5m: from the recorded rates of both SLOs at once.
        for record in ("slo:sli_requests:rate5m", "slo:sli_errors:rate5m"):
            matching = [
                r for r in rules
                if r.get("record") == record and r.get("labels", {}).get("slo") == slo
            ]  # fmt: skip
            assert len(matching) == 1, f"{slo} {record}"
            assert set(re.findall(r"\[(\w+)\]", matching[0]["expr"])) == {"5m"}
    recorded = {r.get("record") for r in rules}
    assert {f"slo:sli_error:ratio_rate{w}" for w in (*SLO_WINDOWS, "30d")} <= recorded
    assert {"slo:objective:ratio", "slo:error_budget_remaining:ratio30d"} <= recorded


def slo_objectives() -> dict[str, float]:
    objectives = {}
    for rule in slo_rules():
        if rule.get("record") == "slo:objective:ratio":
            match = re.fullmatch(r"vector\(([\d.]+)\)", rule["expr"].strip())
            assert match, rule
            objectives[rule["labels"]["slo"]] = float(match[1])
    return objectives


def test_slo_objectives() -> None:
    assert slo_objectives() == {"availability": 0.999, "latency": 0.99}


@pytest.mark.parametrize("slo", ["Availability", "Latency"])
@pytest.mark.parametrize("speed", ["FastBurn", "SlowBurn"])
def test_slo_alerts_are_multiwindow_multi_burn_rate(slo: str, speed: str) -> None:
    """Workbook pairs: page 14.4x (1h and 5m) or 6x (6h and 30m); ticket 3x (1d and 2h) or 1x
    (3d and 6h); the error budget in every comparison is 1 - the objective."""
    (rule,) = [r for r in alert_rules() if r["alert"] == f"SLO{slo}{speed}"]
    assert rule["labels"] == {
        "severity": "page" if speed == "FastBurn" else "ticket",
        "slo": slo.lower(),
    }
    terms = re.findall(
        r'slo:sli_error:ratio_rate(\w+)\{slo="(\w+)"\} / ([\d.]+) > ([\d.]+)', rule["expr"]
    )
    assert len(terms) == 4, rule["expr"]
    budget = 1 - slo_objectives()[slo.lower()]
    for _, label, divisor, _ in terms:
        assert label == slo.lower()
        assert float(divisor) == pytest.approx(budget)
    pairs = {
        (terms[i][0], terms[i + 1][0], float(terms[i][3]))
        for i in (0, 2)
        if terms[i][3] == terms[i + 1][3]
    }
    assert pairs == BURN_RATE_PAIRS[speed]
    # Structure: (long and short) or (long and short).
    assert re.fullmatch(
        r"\(\s*[^()]+\band\b[^()]+\)\s*or\s*\(\s*[^()]+\band\b[^()]+\)", rule["expr"].strip()
    )


def test_bucket_le_matchers_accept_prometheus_2_and_3_spellings() -> None:
    """Prometheus 3 normalizes `le` ("1" -> "1.0"); 2.x keeps the client's spelling.

    A bucket may only be selected with a regex that accepts every spelling of the same
    boundary (le=~"1(\\.0)?"), never with le="...".
    """
    matcher = re.compile(r"""[{,]\s*le\s*(=|!=|=~|!~)\s*(["'`])(.*?)\2""")
    found = []
    for qid, lang, expr in all_queries():
        if lang != "promql":
            continue
        for op, _, value in matcher.findall(expr):
            assert op == "=~", f"{qid}: le{op}{value!r} matches one spelling only"
            pattern = re.compile(value.replace("\\\\", "\\"))
            for bucket in HISTOGRAM_BUCKETS:
                spellings = {f"{bucket:g}", repr(float(bucket))}  # Go / Python and Prometheus 3
                matched = {bool(pattern.fullmatch(s)) for s in spellings}
                assert len(matched) == 1, f"{qid}: le=~{value!r} matches only some of {spellings}"
            found.append((qid, value))
    # The latency SLI is the only bucket selection: the 1 s bucket.
    assert found, "the latency SLI needs the le=~1 bucket"
    for qid, value in found:
        pattern = re.compile(value.replace("\\\\", "\\"))
        assert [b for b in HISTOGRAM_BUCKETS if pattern.fullmatch(repr(float(b)))] == [1], qid


def test_rules_and_dashboards_use_known_metrics(grammar_results: dict[str, dict[str, Any]]) -> None:
    recorded = {rule["record"] for rule in recording_rules()}
    allowed = APP_METRICS | EXPORTER_METRICS | recorded
    unknown = {
        qid: sorted(set(result["metrics"]) - allowed)
        for qid, result in grammar_results.items()
        if set(result["metrics"]) - allowed
    }
    assert not unknown, f"metric names neither in the contract nor exported: {unknown}"


def test_dashboard_promql_passes_promtool(tmp_path: Path) -> None:
    """Prometheus' own parser (with type checks) on every dashboard/datasource PromQL query."""
    promtool = tool("promtool")
    rules = [
        {"record": f"dashboard_query:check:{n}", "expr": expr}
        for n, (qid, lang, expr) in enumerate(all_queries())
        if lang == "promql" and not qid.startswith(("recording:", "alert:"))
    ]
    assert rules
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    assert_ok(run([promtool, "check", "rules", str(path)]))


@pytest.mark.parametrize("qid", [q[0] for q in all_queries()])
def test_query_parses_with_grammar(qid: str, grammar_results: dict[str, dict[str, Any]]) -> None:
    result = grammar_results[qid]
    assert result["lang"] in {"promql", "logql", "traceql"}, f"{qid}: query on an unknown source"
    assert result["ok"], f"{qid}: {result['error']}"


# --------------------------------------------------------------------------- Alertmanager


def render_alertmanager(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    shell = tool("sh")
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ALERTMANAGER_CONFIG_TEMPLATE": str(AM_CONFIG),
        "ALERTMANAGER_RENDER_DIR": str(tmp_path / "rendered"),
        **env,
    }
    return run([shell, str(AM_RENDER), "--render-only"], env=environment)


CHAT_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    "TELEGRAM_BOT_TOKEN": "123456789:AAH-example_token",
    "TELEGRAM_CHAT_ID": "-1001234567890",
}


@pytest.fixture(params=["as-is", "native", "chat-enabled"])
def alertmanager_config(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The config as committed, as the native twin rewrites it, and as rendered with chat."""
    if request.param == "as-is":
        return AM_CONFIG
    if request.param == "native":
        path = tmp_path / "alertmanager.yml"
        path.write_text(native_rewrite(AM_CONFIG.read_text(encoding="utf-8")), encoding="utf-8")
        return path
    result = render_alertmanager(tmp_path, **CHAT_ENV)
    assert_ok(result)
    return Path(result.stdout.strip())


def test_amtool_check_config(alertmanager_config: Path) -> None:
    amtool = tool("amtool")
    result = run([amtool, "check-config", str(alertmanager_config)])
    assert_ok(result)
    assert "SUCCESS" in result.stdout


# Where every alert of the rules goes: (alertname, severity) -> receiver, with the labels the
# rule gives it (service, slo). Any new alert or severity must be added here.
EXPECTED_ROUTES: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("ServiceDown", "page"): ("page", {"service": "api-svc"}),
    ("ServiceDown", "ticket"): ("ticket", {"service": "loki"}),
    ("PostgresDown", "page"): ("page", {"service": "postgres"}),
    ("HighPostgresTPS", "warning"): ("warning", {"service": "postgres", "datname": "messages"}),
    ("HighLatency", "warning"): ("warning", {"service": "api-svc", "route": "/message/{id}"}),
    ("HighErrorRate", "page"): ("page", {"service": "processor-svc"}),
    ("HostHighCpuUsage", "warning"): ("warning", {"service": "node"}),
    ("HostHighMemoryUsage", "ticket"): ("ticket", {"service": "node"}),
    ("HostHighDiskUsage", "ticket"): ("ticket", {"service": "node", "mountpoint": "/"}),
    ("SLOAvailabilityFastBurn", "page"): ("page", {"service": "api-svc", "slo": "availability"}),
    ("SLOAvailabilitySlowBurn", "ticket"): (
        "ticket",
        {"service": "api-svc", "slo": "availability"},
    ),
    ("SLOLatencyFastBurn", "page"): ("page", {"service": "processor-svc", "slo": "latency"}),
    ("SLOLatencySlowBurn", "ticket"): ("ticket", {"service": "processor-svc", "slo": "latency"}),
}
ROUTE_CASES = [
    ({"alertname": name, "severity": severity, **labels}, receiver)
    for (name, severity), (receiver, labels) in sorted(EXPECTED_ROUTES.items())
] + [({"alertname": "SomethingWithoutSeverity", "service": "api-svc"}, "default")]


def test_routing_table_covers_every_alert_and_severity() -> None:
    in_rules = {(rule["alert"], rule["labels"]["severity"]) for rule in alert_rules()}
    assert in_rules == set(EXPECTED_ROUTES)
    for rule in alert_rules():
        _, labels = EXPECTED_ROUTES[(rule["alert"], rule["labels"]["severity"])]
        static = {k: v for k, v in rule["labels"].items() if k != "severity" and "{{" not in v}
        assert static.items() <= labels.items(), rule["alert"]


@pytest.mark.parametrize(
    ("labels", "receiver"),
    ROUTE_CASES,
    ids=[f"{c[0]['alertname']}-{c[0].get('severity', 'none')}" for c in ROUTE_CASES],
)
def test_amtool_routes(alertmanager_config: Path, labels: dict[str, str], receiver: str) -> None:
    amtool = tool("amtool")
    # Quoted: Alertmanager 0.27+ (UTF-8 matchers) refuses a bare value with braces; 0.25 takes both.
    pairs = [f'{key}="{value}"' for key, value in labels.items()]
    result = run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={alertmanager_config}",
            f"--verify.receivers={receiver}",
            *pairs,
        ]
    )
    assert_ok(result)
    assert result.stdout.strip() == receiver


def test_every_rule_severity_has_its_receiver() -> None:
    config = load_yaml(AM_CONFIG)
    routed = {}
    for route in config["route"]["routes"]:
        match = re.fullmatch(r'severity="(\w+)"', route["matchers"][0])
        assert match, route
        routed[match[1]] = route["receiver"]
    severities = {rule["labels"]["severity"] for rule in alert_rules()}
    assert severities == SEVERITIES
    assert routed == {severity: severity for severity in SEVERITIES}
    assert config["route"]["group_by"] == ["alertname", "service"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert config["route"]["receiver"] == "default"
    for receiver in receivers.values():  # the e2e test's webhook sees every notification
        urls = [hook["url"] for hook in receiver.get("webhook_configs", [])]
        assert urls == ["http://alert-webhook:5001/alerts"], receiver["name"]


def test_render_enables_chat_receivers_only_when_configured(tmp_path: Path) -> None:
    plain = render_alertmanager(tmp_path)
    assert_ok(plain)
    plain_config = load_yaml(Path(plain.stdout.strip()))
    assert all(
        "slack_configs" not in r and "telegram_configs" not in r for r in plain_config["receivers"]
    )

    chat = render_alertmanager(tmp_path, **CHAT_ENV)
    assert_ok(chat)
    rendered = Path(chat.stdout.strip())
    receivers = {r["name"]: r for r in load_yaml(rendered)["receivers"]}
    slack_file = tmp_path / "rendered" / "slack_api_url"
    assert slack_file.read_text(encoding="utf-8") == CHAT_ENV["SLACK_WEBHOOK_URL"]
    assert slack_file.stat().st_mode & 0o077 == 0, (
        "the Slack URL file must not be group/world readable"
    )
    assert rendered.stat().st_mode & 0o077 == 0
    assert CHAT_ENV["SLACK_WEBHOOK_URL"] not in rendered.read_text(encoding="utf-8")
    assert [c["api_url_file"] for c in receivers["page"]["slack_configs"]] == [str(slack_file)]
    assert [c["api_url_file"] for c in receivers["ticket"]["slack_configs"]] == [str(slack_file)]
    telegram = receivers["page"]["telegram_configs"][0]
    assert telegram["bot_token"] == CHAT_ENV["TELEGRAM_BOT_TOKEN"]
    assert telegram["chat_id"] == int(CHAT_ENV["TELEGRAM_CHAT_ID"])
    assert "telegram_configs" not in receivers["ticket"]
    assert "slack_configs" not in receivers["warning"]
    assert "telegram_configs" not in receivers["warning"]


@pytest.mark.parametrize(
    "env",
    [
        {"TELEGRAM_CHAT_ID": "12345"},
        {"TELEGRAM_BOT_TOKEN": "123:abc"},
        {"TELEGRAM_BOT_TOKEN": "123:abc|rm", "TELEGRAM_CHAT_ID": "1"},
        {"TELEGRAM_BOT_TOKEN": "123:abc", "TELEGRAM_CHAT_ID": "12a"},
        {"SLACK_WEBHOOK_URL": "http://hooks.slack.com/services/x"},
    ],
    ids=["chat-id-only", "token-only", "bad-token", "bad-chat-id", "slack-not-https"],
)
def test_render_rejects_bad_chat_settings(tmp_path: Path, env: dict[str, str]) -> None:
    result = render_alertmanager(tmp_path, **env)
    assert result.returncode == 64, result.stderr


def test_render_drops_config_file_flag_and_execs(tmp_path: Path) -> None:
    shell = tool("sh")
    echo = tool("echo")
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "ALERTMANAGER_CONFIG_TEMPLATE": str(AM_CONFIG),
        "ALERTMANAGER_RENDER_DIR": str(tmp_path / "rendered"),
        "ALERTMANAGER_BIN": echo,
    }
    result = run(
        [
            shell,
            str(AM_RENDER),
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/am",
        ],
        env=environment,
    )
    assert_ok(result)
    assert result.stdout.split() == [
        f"--config.file={tmp_path / 'rendered' / 'alertmanager.yml'}",
        "--storage.path=/am",
    ]


@pytest.fixture
def running_alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = tool("prometheus-alertmanager", "alertmanager")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(native_rewrite(AM_CONFIG.read_text(encoding="utf-8")), encoding="utf-8")
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).close()  # noqa: S310
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        "alertmanager did not start:\n"
                        + (tmp_path / "alertmanager.log").read_text()
                    )
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def inhibition_state(base: str, alerts: list[dict[str, str]]) -> dict[tuple[str, ...], bool]:
    """Post alerts to a running Alertmanager; (alertname, service[, slo]) -> inhibited?"""
    http("POST", f"{base}/api/v2/alerts", [{"labels": labels} for labels in alerts])

    def key(labels: dict[str, str]) -> tuple[str, ...]:
        slo = (labels["slo"],) if "slo" in labels else ()
        return (labels["alertname"], labels["service"], *slo)

    deadline = time.monotonic() + 10
    while True:
        state = {
            key(a["labels"]): bool(a["status"]["inhibitedBy"])
            for a in http("GET", f"{base}/api/v2/alerts")
        }
        if len(state) == len(alerts) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def test_inhibition_servicedown_mutes_latency_and_errors_of_same_service(
    running_alertmanager: str,
) -> None:
    def alert(name: str, service: str, severity: str, **extra: str) -> dict[str, str]:
        return {"alertname": name, "service": service, "severity": severity, **extra}

    state = inhibition_state(
        running_alertmanager,
        [
            alert("ServiceDown", "api-svc", "page"),
            alert("HighLatency", "api-svc", "warning"),
            alert("HighErrorRate", "api-svc", "page"),
            alert("SLOLatencyFastBurn", "api-svc", "page", slo="latency"),
            alert("SLOAvailabilitySlowBurn", "api-svc", "ticket", slo="availability"),
            alert("HighLatency", "processor-svc", "warning"),
            alert("PostgresDown", "postgres", "page"),
        ],
    )
    assert state == {
        ("ServiceDown", "api-svc"): False,
        ("HighLatency", "api-svc"): True,
        ("HighErrorRate", "api-svc"): True,
        ("SLOLatencyFastBurn", "api-svc", "latency"): True,
        ("SLOAvailabilitySlowBurn", "api-svc", "availability"): True,
        ("HighLatency", "processor-svc"): False,
        ("PostgresDown", "postgres"): False,
    }


def test_inhibition_fast_burn_mutes_slow_burn_of_same_slo_and_service(
    running_alertmanager: str,
) -> None:
    def alert(name: str, service: str, slo: str) -> dict[str, str]:
        severity = "page" if name.endswith("FastBurn") else "ticket"
        return {"alertname": name, "service": service, "slo": slo, "severity": severity}

    state = inhibition_state(
        running_alertmanager,
        [
            alert("SLOAvailabilityFastBurn", "api-svc", "availability"),
            alert("SLOAvailabilitySlowBurn", "api-svc", "availability"),
            # Another SLO of the same service, the same SLO of another service: not muted.
            alert("SLOLatencySlowBurn", "api-svc", "latency"),
            alert("SLOAvailabilitySlowBurn", "processor-svc", "availability"),
            alert("SLOLatencyFastBurn", "processor-svc", "latency"),
            alert("SLOLatencySlowBurn", "processor-svc", "latency"),
        ],
    )
    assert state == {
        ("SLOAvailabilityFastBurn", "api-svc", "availability"): False,
        ("SLOAvailabilitySlowBurn", "api-svc", "availability"): True,
        ("SLOLatencySlowBurn", "api-svc", "latency"): False,
        ("SLOAvailabilitySlowBurn", "processor-svc", "availability"): False,
        ("SLOLatencyFastBurn", "processor-svc", "latency"): False,
        ("SLOLatencySlowBurn", "processor-svc", "latency"): True,
    }


# --------------------------------------------------------------------------- Loki, Tempo, Alloy


def test_loki_config() -> None:
    config = load_yaml(LOKI_CONFIG)
    assert config["auth_enabled"] is False
    assert config["server"]["http_listen_port"] == 3100
    schema = config["schema_config"]["configs"][-1]
    assert (schema["store"], schema["schema"], schema["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    assert schema["index"]["period"] == "24h", "retention needs a 24h index period"
    assert "filesystem" in config["common"]["storage"]
    limits = config["limits_config"]
    assert limits["allow_structured_metadata"] is True
    hours = int(re.fullmatch(r"(\d+)h", limits["retention_period"])[1])  # type: ignore[index]
    assert hours >= 24, "Loki's minimum retention period is 24h"
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem", (
        "required when retention is enabled (Loki 3)"
    )
    assert "shared_store" not in compactor, "removed in Loki 3"


def test_tempo_config() -> None:
    config = load_yaml(TEMPO_CONFIG)
    assert config["server"]["http_listen_port"] == 3200
    protocols = config["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    storage = config["storage"]["trace"]
    assert storage["backend"] == "local"
    assert storage["local"]["path"]
    assert storage["wal"]["path"]
    remote_write = config["metrics_generator"]["storage"]["remote_write"]
    assert remote_write == [{"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}]
    processors = config["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert set(processors) == {"service-graphs", "span-metrics"}
    assert "metrics_generator_processors" not in config["overrides"], "legacy overrides format"


def strip_alloy_comments(text: str) -> str:
    """Remove // and /* */ comments outside string literals."""
    out: list[str] = []
    index, in_string = 0, False
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[index + 1])
                index += 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
            out.append(char)
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = len(text) if end == -1 else end
            continue
        elif text.startswith("/*", index):
            end = text.find("*/", index)
            assert end != -1, "unterminated /* comment"
            index = end + 2
            continue
        else:
            out.append(char)
        index += 1
    assert not in_string, "unterminated string literal"
    return "".join(out)


def alloy_blocks(text: str) -> dict[str, str]:
    """Top-level `component "label" { ... }` blocks of an Alloy file (comments stripped)."""
    text = strip_alloy_comments(text)
    blocks: dict[str, str] = {}
    for match in re.finditer(r'^([a-z_.]+)\s+"([\w-]+)"\s*\{', text, flags=re.MULTILINE):
        depth, index = 1, match.end()
        in_string = False
        while depth and index < len(text):
            char = text[index]
            if char == '"' and text[index - 1] != "\\":
                in_string = not in_string
            elif not in_string and char == "{":
                depth += 1
            elif not in_string and char == "}":
                depth -= 1
            index += 1
        assert depth == 0, f"unbalanced braces in {match[1]} {match[2]}"
        blocks[f"{match[1]}.{match[2]}"] = text[match.end() : index - 1]
    return blocks


def test_alloy_config() -> None:
    blocks = alloy_blocks(ALLOY_CONFIG.read_text(encoding="utf-8"))
    assert set(blocks) == {
        "discovery.docker.containers",
        "discovery.relabel.app_containers",
        "loki.source.docker.app_containers",
        "loki.process.json_logs",
        "loki.write.loki",
    }
    assert (
        'host             = "unix:///var/run/docker.sock"' in blocks["discovery.docker.containers"]
    )
    relabel = blocks["discovery.relabel.app_containers"]
    assert "__meta_docker_container_label_com_docker_compose_service" in relabel
    assert 'regex         = "api-svc|processor-svc|gateway"' in relabel
    assert 'action        = "keep"' in relabel
    source = blocks["loki.source.docker.app_containers"]
    assert "targets    = discovery.relabel.app_containers.output" in source
    assert "forward_to = [loki.process.json_logs.receiver]" in source
    process = blocks["loki.process.json_logs"]

    def stage_keys(stage: str) -> set[str]:
        body = re.search(stage + r"\s*\{(.*?)\n  \}", process, flags=re.DOTALL)
        assert body, f"{stage} missing"
        return set(re.findall(r"^\s*(\w+)\s*=", body[1], flags=re.MULTILINE)) - {
            "expressions",
            "values",
        }

    assert stage_keys(r"stage\.json") == {"level", "service", "trace_id", "request_id"}
    assert stage_keys(r"stage\.labels") == {"service", "level"}
    assert stage_keys(r"stage\.structured_metadata") == {"trace_id", "request_id"}
    assert 'url = "http://loki:3100/loki/api/v1/push"' in blocks["loki.write.loki"]


def test_alloy_refresh_intervals_are_where_they_apply() -> None:
    """loki.source.docker's refresh_interval applies only to a Docker daemon over HTTP(S)
    (Alloy's reference); on the unix socket it does nothing. How often new containers are
    found is discovery.docker's refresh_interval."""
    blocks = alloy_blocks(ALLOY_CONFIG.read_text(encoding="utf-8"))
    for name, body in blocks.items():
        if not name.startswith("loki.source.docker."):
            continue
        host = re.search(r'^\s*host\s*=\s*"([^"]+)"', body, flags=re.MULTILINE)
        assert host, name
        if host[1].startswith("unix://"):
            assert not re.search(r"^\s*refresh_interval\s*=", body, flags=re.MULTILINE), name
    discovery = blocks["discovery.docker.containers"]
    assert re.search(r'^\s*refresh_interval\s*=\s*"\d+s"', discovery, flags=re.MULTILINE)


# --------------------------------------------------------------------------- Grafana


def test_datasources_provisioning() -> None:
    sources = datasources()
    by_uid = {source["uid"]: source for source in sources}
    assert set(by_uid) == DATASOURCE_UIDS
    assert len({source["name"] for source in sources}) == len(sources)
    expected = {
        "prometheus": ("prometheus", "http://prometheus:9090"),
        "loki": ("loki", "http://loki:3100"),
        "tempo": ("tempo", "http://tempo:3200"),
        "alertmanager": ("alertmanager", "http://alertmanager:9093"),
    }
    for uid, (kind, url) in expected.items():
        assert (by_uid[uid]["type"], by_uid[uid]["url"]) == (kind, url)
    assert [s["uid"] for s in sources if s.get("isDefault")] == ["prometheus"]

    prom = by_uid["prometheus"]["jsonData"]
    assert prom["exemplarTraceIdDestinations"][0] == {
        "name": "traceID",  # the exemplar label Tempo's metrics-generator writes
        "datasourceUid": "tempo",
        "urlDisplayLabel": "Trace: $${__value.raw}",
    }
    derived = by_uid["loki"]["jsonData"]["derivedFields"]
    assert derived[0]["matcherType"] == "label"
    assert derived[0]["matcherRegex"] == "trace_id"
    assert derived[0]["datasourceUid"] == "tempo"
    tempo = by_uid["tempo"]["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert by_uid["alertmanager"]["jsonData"]["implementation"] == "prometheus"


# Tempo data source settings Grafana no longer reads, and the release that dropped them:
# the Loki search tab (grafana/grafana#84346, "Tempo: Remove Loki tab", Grafana 11; logs are
# reached through tracesToLogsV2).
TEMPO_SETTINGS_REMOVED = {"lokiSearch": 11}


def test_tempo_datasource_uses_only_settings_the_pinned_grafana_reads() -> None:
    compose = load_yaml(REPO_ROOT / "docker-compose.yml")
    image = compose["services"]["grafana"]["image"]
    version = re.fullmatch(r"grafana/grafana:(\d+)\.\d+\.\d+", image)
    assert version, image
    major = int(version[1])
    (tempo,) = [source for source in datasources() if source["type"] == "tempo"]
    stale = {key for key, since in TEMPO_SETTINGS_REMOVED.items() if major >= since}
    assert stale & set(tempo["jsonData"]) == set(), f"{image} ignores these"
    assert tempo["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"


def test_datasource_references_resolve() -> None:
    def uids(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasourceUid":
                    yield value
                yield from uids(value)
        elif isinstance(node, list):
            for item in node:
                yield from uids(item)

    referenced = set(uids(datasources()))
    assert referenced, "no cross-datasource links"
    assert referenced <= DATASOURCE_UIDS


def test_datasources_escape_grafana_variables() -> None:
    """Grafana expands $VAR and ${VAR} in provisioning files: a literal `$` is written `$$`."""
    text = re.sub(r"(?m)^\s*#.*$", "", DATASOURCES.read_text(encoding="utf-8"))
    lone = [m.start() for m in re.finditer(r"(?<!\$)\$(?!\$)", text)]
    assert not lone, f"unescaped $ at offsets {lone}"


def test_dashboard_provider() -> None:
    providers = load_yaml(DASHBOARD_PROVIDER)["providers"]
    assert len(providers) == 1
    provider = providers[0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert sorted(DASHBOARDS_DIR.glob("*.json")), "no dashboard to provision"


@pytest.mark.parametrize(
    "path", sorted(DASHBOARDS_DIR.glob("*.json")), ids=lambda p: str(p.relative_to(REPO_ROOT))
)
def test_dashboard_panels_reference_provisioned_datasources(path: Path) -> None:
    dashboard = load_dashboard(path)
    names = {source["name"] for source in datasources()}
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    problems = []
    for panel in panels(dashboard):
        where = f"panel {panel['id']} {panel.get('title')!r}"
        if panel["type"] == "row":
            continue
        if not panel.get("description", "").strip():
            problems.append(f"{where}: no description")
        if panel["type"] == "alertlist":
            # The alert list reads rules through a data source chosen by name.
            if panel["options"].get("datasource") not in names:
                problems.append(
                    f"{where}: alert source {panel['options'].get('datasource')!r} not provisioned"
                )
            continue
        if (panel.get("datasource") or {}).get("uid") not in DATASOURCE_UIDS:
            problems.append(f"{where}: datasource {panel.get('datasource')} not provisioned")
        targets = panel.get("targets", [])
        if not any(target_expr(t).strip() for t in targets):
            problems.append(f"{where}: no target with an expression")
        for target in targets:
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid not in DATASOURCE_UIDS:
                problems.append(
                    f"{where} target {target.get('refId')}: datasource {uid!r} not provisioned"
                )
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if panel["type"] in {"timeseries", "stat"}:
            if not defaults.get("unit"):
                problems.append(f"{where}: no unit")
            if not defaults.get("thresholds", {}).get("steps"):
                problems.append(f"{where}: no thresholds")
    assert not problems, "\n".join(problems)


def test_overview_dashboard_layout_and_variables() -> None:
    dashboard = load_dashboard()
    assert (dashboard["uid"], dashboard["title"]) == ("services-overview", "Services overview")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("service", "route", "instance"):
        query = variables[name]["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert text.startswith("label_values(app_http_requests_total"), name
        assert variables[name]["datasource"]["uid"] == "prometheus"
        # `.+`, not `.*`: Loki refuses selectors whose matchers all accept the empty string.
        assert variables[name]["allValue"] == ".+"
    # Every Loki stream has a service; not every line has a level (see
    # test_loki_panels_show_lines_without_a_level_when_all_is_selected).
    assert variables["log_service"]["allValue"] == ".+"
    assert variables["level"]["allValue"] == ".*"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Traffic",
        "Errors",
        "Latency",
        "Gateway (nginx)",
        "Database (PostgreSQL)",
        "Host (node exporter)",
        "Logs",
        "Alerts",
        "SLO",
    ]
    # A live demo: refresh every 10 s, the last 15 minutes.
    assert dashboard["refresh"] == "10s"
    assert dashboard["time"] == {"from": "now-15m", "to": "now"}
    types = {p["type"] for p in panels(dashboard)}
    assert {"logs", "alertlist", "timeseries", "stat", "table", "heatmap"} <= types
    exprs = " ".join(target_expr(t) for p in panels(dashboard) for t in p.get("targets", []))
    for quantile in ("0.5", "0.95", "0.99"):
        for by in ("le, service", "le, service, route"):
            assert (
                f"histogram_quantile({quantile}, sum by ({by}) (rate(app_http_request_duration"
                "_seconds_bucket{" in exprs
            ), (quantile, by)
    assert "[$__rate_interval]" in exprs
    for needle in (
        "app_http_requests_in_flight",
        'status=~"4.."',
        'status=~"5.."',
        "app_exceptions_total",
        "nginx_http_requests_total",
        "nginx_connections_active",
        "pg_stat_database_numbackends",
        "pg_stat_database_xact_commit",
        "pg_stat_statements_seconds_total",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "ALERTS",
        "slo:error_budget_remaining:ratio30d",
        'level=~"warning|error|critical"',
    ):
        assert needle in exprs, needle
    # Grid: inside 24 columns, no two panels overlapping.
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another one"
                cells.add((x, y))


def panel_by_title(title: str) -> dict[str, Any]:
    (panel,) = [
        p for p in panels(load_dashboard()) if p["type"] != "row" and p.get("title") == title
    ]
    return panel


def test_compose_only_panels_are_marked_and_listed() -> None:
    """The convention the native end-to-end test relies on (see native_prometheus_queries).

    A panel is compose-only when its description contains "(compose only)". It must be so
    when it queries Loki or Tempo or a compose-only metric, and a marked panel must not hide
    a query the native twin could answer.
    """
    dashboard = load_dashboard()
    marked = {p["title"] for p in panels(dashboard) if is_compose_only(p)}
    assert marked == set(COMPOSE_ONLY_PANELS)
    grammar = {qid: lang for qid, lang, _ in all_queries()}
    for panel in panels(dashboard):
        if panel["type"] in {"row", "alertlist"}:
            continue
        langs = set()
        compose_metrics = []
        for target in panel.get("targets", []):
            lang = ds_lang(target.get("datasource") or panel.get("datasource"))
            langs.add(lang)
            qid = f"{OVERVIEW.stem}:panel{panel['id']}:{target['refId']}"
            assert grammar[qid] == lang
            if lang == "promql":
                used = set(re.findall(r"[a-zA-Z_:][\w:]*(?=\s*\{)", target_expr(target)))
                compose_metrics.append(bool(used & COMPOSE_ONLY_METRICS))
        needs_compose = bool(langs - {"promql"}) or any(compose_metrics)
        assert is_compose_only(panel) == needs_compose, panel["title"]
        if is_compose_only(panel) and "promql" in langs:
            assert all(compose_metrics), f"{panel['title']}: a native query hides in it"


def test_native_queries_use_only_what_the_native_stack_exposes(
    grammar_results: dict[str, dict[str, Any]],
) -> None:
    recorded = {rule["record"] for rule in recording_rules()}
    allowed = APP_METRICS | NATIVE_EXPORTER_METRICS | recorded
    native = native_prometheus_queries()
    assert len(native) >= 40, "the native end-to-end test would check too little"
    ids = {f"{OVERVIEW.stem}:{qid}" for qid, _ in native}
    for qid in ids:
        result = grammar_results[qid]
        assert result["lang"] == "promql", qid
        assert set(result["metrics"]) <= allowed, (qid, set(result["metrics"]) - allowed)
    # Substituted the way the end-to-end test does, each one is valid PromQL.
    for _, expr in native:
        plain = grafana_to_plain(expr)
        assert "$" not in plain, plain


def test_latency_panels_link_to_traces() -> None:
    """Latency -> traces: exemplars on the span-metrics panel, data links on the route panel."""
    sources = {source["uid"]: source for source in datasources()}
    assert sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == (
        "tempo"
    )
    span = panel_by_title("Server span latency by route, exemplars link to traces")
    assert span["targets"]
    assert all(t["exemplar"] is True for t in span["targets"])
    assert all("traces_spanmetrics_latency_bucket" in t["expr"] for t in span["targets"])

    route = panel_by_title("Latency p50 / p95 / p99 by route")
    links = data_links(route)
    assert len(links) == 2
    for link in links:
        (pane,) = explore_panes(link["url"]).values()
        assert pane["datasource"] == "tempo"
        assert pane["range"] == {"from": "${__from}", "to": "${__to}"}
        (query,) = pane["queries"]
        assert query["datasource"] == {"type": "tempo", "uid": "tempo"}
        assert query["queryType"] == "traceql"
        assert 'resource.service.name="${__field.labels.service}"' in query["query"]
        assert 'span.http.route="${__field.labels.route}"' in query["query"]
        assert "kind=server" in query["query"]

    traces = panel_by_title("Slowest recent traces")
    (target,) = traces["targets"]
    assert (target["datasource"]["uid"], target["queryType"]) == ("tempo", "traceql")
    assert 'resource.service.name=~"$service"' in target["query"]


def threshold_values(panel: dict[str, Any]) -> set[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return {step["value"] for step in steps if step["value"] is not None}


@pytest.mark.parametrize(
    ("title", "values"),
    [
        ("Error ratio (5xx)", {0.05}),
        ("Error ratio by service (4xx, 5xx)", {0.05}),
        ("p99 latency", {1}),
        ("Latency p50 / p95 / p99 by route", {1}),
        ("Latency p50 / p95 / p99 by service", {1}),
        ("CPU usage", {0.9}),
        ("Memory usage", {0.9}),
        ("Disk usage", {0.85}),
        ("Error budget burn rate (1 h)", {6, 14.4}),
        ("Error budget remaining (30 days)", {0}),
    ],
)
def test_panel_thresholds_match_the_alerts(title: str, values: set[float]) -> None:
    assert values <= threshold_values(panel_by_title(title))


def test_disk_panel_and_alert_select_the_same_filesystems() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "HostHighDiskUsage"]
    selectors = set(re.findall(r"node_filesystem_\w+\{([^}]*)\}", rule["expr"]))
    (target,) = panel_by_title("Disk usage")["targets"]
    assert set(re.findall(r"node_filesystem_\w+\{([^}]*)\}", target["expr"])) == selectors
    (selector,) = selectors
    fstype = re.search(r'fstype=~"([^"]+)"', selector)
    assert fstype, "filter on a list of real filesystem types"
    for kind in ("ext4", "xfs", "btrfs", "overlay"):
        assert re.fullmatch(fstype[1], kind), kind
    for kind in ("tmpfs", "devtmpfs", "squashfs", "proc"):
        assert not re.fullmatch(fstype[1], kind), kind


def test_logs_row_counts_warnings_and_errors() -> None:
    panel = panel_by_title("Error and warning lines")
    (target,) = panel["targets"]
    assert target["datasource"]["uid"] == "loki"
    assert target["expr"].startswith("sum by (service, level) (count_over_time({")
    assert 'service=~"$log_service"' in target["expr"]
    logs = panel_by_title("Service logs")
    assert logs["targets"][0]["expr"] == '{service=~"$log_service", level=~"$level"}'


# Loki labels every stream carries: Alloy names each stream after its compose service
# (discovery.relabel, test_alloy_config). `level` comes from the JSON line only: the
# gateway's error log, a traceback printed before logging is set up, any non-JSON line has
# none.
LOKI_LABELS_ON_EVERY_STREAM = {"service"}
LOKI_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def loki_selectors(expr: str) -> list[list[tuple[str, str, str]]]:
    """The (label, operator, value) matchers of each `{...}` stream selector of a query."""
    return [LOKI_MATCHER.findall(body) for body in re.findall(r"\{([^{}]*)\}", expr)]


def loki_targets() -> Iterator[tuple[str, str]]:
    for panel in panels(load_dashboard()):
        for target in panel.get("targets", []):
            if ds_lang(target.get("datasource") or panel.get("datasource")) == "logql":
                yield panel["title"], target_expr(target)


def matches(operator: str, pattern: str, value: str) -> bool:
    found = re.fullmatch(pattern, value) is not None if "~" in operator else pattern == value
    return found != operator.startswith("!")


def test_loki_panels_show_lines_without_a_level_when_all_is_selected() -> None:
    """A `label=~".+"` matcher never matches a line that lacks the label: with All selected,
    every Loki panel filtered by variables only must still select such a line (here one of
    the gateway's error log), and every selector must keep one matcher that rejects the empty
    value (Loki refuses the query otherwise)."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    gateway_error_line = {"service": "gateway"}  # no `level`: not a JSON line
    targets = list(loki_targets())
    assert targets
    for title, expr in targets:
        for selector in loki_selectors(expr):
            resolved = []
            for label, operator, written in selector:
                name = re.fullmatch(r"\$\{?(\w+)\}?", written)
                if name is None:
                    resolved.append((label, operator, written))
                    continue
                variable = variables[name[1]]
                assert variable["includeAll"], (title, name[1])
                all_value = variable["allValue"]
                if label not in LOKI_LABELS_ON_EVERY_STREAM:
                    assert matches(operator, all_value, ""), (title, label, all_value)
                resolved.append((label, operator, all_value))
            assert any(not matches(op, value, "") for _, op, value in resolved), (title, expr)
            if all("$" in written for _, _, written in selector):
                assert all(
                    matches(op, value, gateway_error_line.get(label, ""))
                    for label, op, value in resolved
                ), (title, resolved)


def test_the_log_source_variable_lists_every_stream_alloy_ships() -> None:
    """The service filter of the Loki panels takes its values from Loki's own `service` label
    (api-svc, processor-svc and the gateway), not from the services' Prometheus metrics,
    where the gateway never appears."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    used = {
        name
        for _, expr in loki_targets()
        for selector in loki_selectors(expr)
        for label, _, value in selector
        if label == "service"
        for name in re.findall(r"\$\{?(\w+)\}?", value)
    }
    assert used, "the Loki panels do not filter by service"
    for name in used:
        variable = variables[name]
        assert variable["datasource"]["uid"] == "loki", name
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        assert re.fullmatch(r"label_values\((\{[^}]*\},\s*)?service\)", text.strip()), text
    alloy = ALLOY_CONFIG.read_text(encoding="utf-8")
    assert 'regex         = "api-svc|processor-svc|gateway"' in alloy
