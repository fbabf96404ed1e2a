"""The benchmark's parsing and its report, without running it (`make bench` takes 8 minutes).

The committed bench/results.json is the fixture: its per-round numbers, fed back through the
report, must give the same keys, and the same summaries, as the run that wrote it."""

import json
from pathlib import Path
from typing import Any

import pytest

from stackctl.addresses import REPO
from stackctl.bench.accounting import Memory
from stackctl.bench.load import (
    Load,
    Scrapes,
    parse_hey_csv,
    parse_wrk,
    to_load,
    write_scripts,
    wrk_argv,
)
from stackctl.bench.report import (
    Measurements,
    build_results,
    finish,
    machine_info,
    percentile,
    table,
)
from stackctl.bench.runner import rotated
from stackctl.bench.settings import BenchConfig
from stackctl.processes import ComponentFailedError

COMMITTED: dict[str, Any] = json.loads((REPO / "bench" / "results.json").read_text())


def _keys(value: Any, path: str = "") -> set[str]:
    """Every key path in a JSON value; list items share one ``[]`` path."""
    if isinstance(value, dict):
        return {p for key, item in value.items() for p in _keys(item, f"{path}.{key}")} | {path}
    if isinstance(value, list):
        return {p for item in value for p in _keys(item, f"{path}[]")} | {path}
    return {path}


def _loads(summary: dict[str, Any]) -> list[Load]:
    return [Load(**round_) for round_ in summary["rounds"]]


def _measurements(results: dict[str, Any]) -> Measurements:
    """What the runner measured, as far as results.json keeps it (scrape times it does not:
    made up here, so ``metrics`` is compared by its keys only)."""
    m = Measurements()
    for route in ("health", "message"):
        for where in ("direct", "gateway"):
            for variant, summary in results[route][where].items():
                m.loads[(route, where, variant)] = _loads(summary)
    m.loads[("process", "gateway", "full")] = _loads(results["process"])
    m.loads[("message", "scraped", "full")] = _loads(
        results["metrics"]["load_while_scraping_api_svc"]
    )
    for service in ("api-svc", "processor-svc"):
        m.scrapes[("full", service)] = [Scrapes(times_ms=[5.0, 6.0, 12.5], failed=0)]
    return m


def _memory(results: dict[str, Any]) -> tuple[Memory, Memory]:
    before: dict[str, dict[str, dict[int, int]]] = {}
    after: dict[str, dict[str, dict[int, int]]] = {}
    for w in results["memory"]["workers"]:
        before.setdefault(w["variant"], {}).setdefault(w["service"], {})[w["pid"]] = w["before_kb"]
        after.setdefault(w["variant"], {}).setdefault(w["service"], {})[w["pid"]] = w["after_kb"]
    span, served = results["memory"]["span_s"], results["memory"]["full_requests_served_between"]
    return Memory(100.0, before, 1000.0), Memory(100.0 + span, after, 1000.0 + served)


@pytest.fixture(scope="module")
def rebuilt() -> dict[str, Any]:
    settings = COMMITTED["settings"]
    config = BenchConfig(
        rounds=settings["rounds"], duration=settings["duration_s"], warmup=settings["warmup_s"]
    )
    measured = build_results(
        config, _measurements(COMMITTED), _memory(COMMITTED), COMMITTED["traces"]
    )
    return finish(machine_info(), measured, COMMITTED["elapsed_s"])


def test_a_report_has_exactly_the_keys_of_the_committed_results(rebuilt: dict[str, Any]) -> None:
    assert _keys(rebuilt) == _keys(COMMITTED)


def test_the_report_recomputes_the_committed_numbers_from_their_rounds(
    rebuilt: dict[str, Any],
) -> None:
    for section in ("health", "message", "process", "gateway", "memory", "traces", "settings"):
        assert rebuilt[section] == COMMITTED[section], section
    for key, target in COMMITTED["targets"].items():
        if not key.startswith("metrics."):  # made-up scrape times
            assert rebuilt["targets"][key] == target, key


def test_the_table_shows_every_row_and_target(rebuilt: dict[str, Any]) -> None:
    text = table(COMMITTED)
    assert text.count("| GET /health |") == 5  # 3 direct, 2 through the gateway
    assert text.count("| GET /message/{id} |") == 5
    assert "| POST /process (400 conns) | gateway | full |" in text
    for key in COMMITTED["targets"]:
        assert f"| `{key}` |" in text
    assert text.splitlines()[-1].startswith("Full variant: 4 workers,")
    assert table(rebuilt).splitlines()[:12] == text.splitlines()[:12]


def test_wrk_reports_one_json_line_and_process_counts_its_window_only() -> None:
    line = (
        'BENCH_RESULT {"requests":8000,"duration_us":2000000,"p50_us":1500,"p99_us":9000,'
        '"errors":1,"status_errors":2,"window_requests":0,"window_s":0}'
    )
    raw = parse_wrk(f"Running 2s test\n{line}\n")
    assert to_load(raw) == Load(rps=4000.0, p50_ms=1.5, p99_ms=9.0, requests=8000, errors=3)
    windowed = to_load({**raw, "window_requests": 7000, "window_s": 10})
    assert windowed.rps == 700.0  # not 8000 / 2 s
    with pytest.raises(ComponentFailedError, match="no result"):
        parse_wrk("unable to connect\n")


def test_hey_csv_counts_answers_and_what_never_came() -> None:
    csv = (
        "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset\n"
        "0.0052,0,0,0,0,0,200,0.1\n"
        "0.0150,0,0,0,0,0,200,0.4\n"
        "0.0900,0,0,0,0,0,503,0.7\n"
    )
    assert parse_hey_csv(csv, expected=5) == Scrapes(times_ms=[5.2, 15.0], failed=3)


def test_wrk_scripts_end_with_the_report(tmp_path: Path) -> None:
    scripts = write_scripts(tmp_path)
    assert set(scripts) == {"get", "message", "process"}
    for path in scripts.values():
        assert path.read_text().lstrip().startswith("threads = {}")
        assert "BENCH_RESULT" in path.read_text()
    argv = wrk_argv("http://127.0.0.1:1/x", scripts["process"], 400, 12.2, "2", "8")
    script = str(scripts["process"])
    assert argv == ["wrk", "-t1", "-c400", "-d13s", "--timeout", "10s", "-s", script,
                    "http://127.0.0.1:1/x", "--", "2", "8"]  # fmt: skip


def test_percentile_is_nearest_rank_and_rounds_rotate() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([3.0], 99) == 3.0
    assert [rotated(("bare", "full", "peer"), n)[0] for n in range(4)] == [
        "bare", "full", "peer", "bare"
    ]  # fmt: skip
