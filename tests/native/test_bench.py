"""The benchmark's parsing and its report, without running it (`make bench` takes 8 minutes).

The committed bench/results.json is the fixture: its per-round numbers, fed back through the
report, must give the same keys, and the same summaries, as the run that wrote it (plus the keys
added since, until the next run rewrites it). bench/chart.svg is drawn from it."""

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from stackctl.addresses import REPO
from stackctl.bench import chart
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
    TARGETS,
    Measurements,
    build_results,
    finish,
    machine_info,
    percentile,
    table,
    write_results,
)
from stackctl.bench.runner import rotated
from stackctl.bench.settings import GATEWAY_VARIANTS, VARIANTS, BenchConfig
from stackctl.processes import ComponentFailedError

COMMITTED: dict[str, Any] = json.loads((REPO / "bench" / "results.json").read_text())
# Keys the report has gained since the committed results.json was written: the only difference
# allowed between the two (none once `make bench` has rewritten it). ``targets`` is checked
# against TARGETS instead: its entries are the targets, which change with the issue.
ADDED_SINCE_COMMITTED = {
    ".health.instrumentation_cpu_ms",
    ".message.instrumentation_cpu_ms",
    ".message.full_over_health_bare",
    ".gateway.nginx_cpu_ms_per_request",
}
SVG = "{http://www.w3.org/2000/svg}"


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


def _outside_targets(keys: set[str]) -> set[str]:
    return {key for key in keys if not key.startswith(".targets.")}


def test_a_report_keeps_every_key_of_the_committed_results(rebuilt: dict[str, Any]) -> None:
    keys, committed = _outside_targets(_keys(rebuilt)), _outside_targets(_keys(COMMITTED))
    assert committed <= keys, "dropped or renamed"
    assert keys - committed <= ADDED_SINCE_COMMITTED
    assert list(rebuilt["targets"]) == [key for key, _, _ in TARGETS]
    for evaluated in rebuilt["targets"].values():
        assert set(evaluated) == {"value", "target", "met"}


def test_the_report_recomputes_the_committed_numbers_from_their_rounds(
    rebuilt: dict[str, Any],
) -> None:
    for section in ("health", "message", "process", "gateway", "memory", "traces", "settings"):
        kept = {key: v for key, v in rebuilt[section].items() if key in COMMITTED[section]}
        assert kept == COMMITTED[section], section
    for key, target in COMMITTED["targets"].items():
        # made-up scrape times; a key no longer a target is still in its section (above)
        if not key.startswith("metrics.") and key in rebuilt["targets"]:
            assert rebuilt["targets"][key]["value"] == target["value"], key


def test_the_new_keys_from_the_committed_rounds(rebuilt: dict[str, Any]) -> None:
    """Worked out again here from the committed per-round numbers."""
    for route in ("health", "message"):
        pairs = zip(
            COMMITTED[route]["direct"]["full"]["rounds"],
            COMMITTED[route]["direct"]["bare"]["rounds"],
            strict=True,
        )
        differences = sorted(f["cpu_ms_per_request"] - b["cpu_ms_per_request"] for f, b in pairs)
        assert rebuilt[route]["instrumentation_cpu_ms"] == round(differences[1], 3), route
    rounds = zip(
        COMMITTED["message"]["direct"]["full"]["rounds"],
        COMMITTED["health"]["direct"]["bare"]["rounds"],
        strict=True,
    )
    ratios = sorted(m["rps"] / h["rps"] for m, h in rounds)
    assert rebuilt["message"]["full_over_health_bare"] == round(ratios[1], 3)
    nginx = COMMITTED["health"]["gateway"]["full"]["gateway_cpu_ms_per_request"]
    assert rebuilt["gateway"]["nginx_cpu_ms_per_request"] == nginx
    for key in ("gateway.hop_ratio", "message.full_over_bare"):  # reported, no longer targets
        assert f"| `{key}` |" in table(rebuilt)
        assert key not in rebuilt["targets"]


# --- synthetic measurements -----------------------------------------------------------------------
def _load(rps: float, cpu: float | None = 1.0, nginx: float | None = None) -> Load:
    return Load(rps=rps, p50_ms=1.0, p99_ms=2.0, requests=int(rps * 8), errors=0,
                cpu_ms_per_request=cpu, gateway_cpu_ms_per_request=nginx)  # fmt: skip


def _synthetic(overrides: dict[tuple[str, str, str], list[Load]]) -> dict[str, Any]:
    """results (as build_results makes them) of three rounds of made-up loads: every run
    1000 req/s at 1 ms of CPU (0.1 ms of nginx through a gateway) unless ``overrides`` says."""
    m = Measurements()
    keys = [(r, "direct", v) for r in ("health", "message") for v in VARIANTS]
    keys += [(r, "gateway", v) for r in ("health", "message") for v in GATEWAY_VARIANTS]
    keys += [("process", "gateway", "full"), ("message", "scraped", "full")]
    for key in keys:
        nginx = 0.1 if key[1] == "gateway" else None
        m.loads[key] = overrides.get(key, [_load(1000.0, 1.0, nginx)] * 3)
    m.scrapes[("full", "api-svc")] = [Scrapes(times_ms=[5.0, 6.0], failed=0)]
    workers = {"full": {"api-svc": {1: 1000}}}
    memory = (Memory(0.0, workers, 0.0), Memory(300.0, workers, 1000.0))
    return build_results(BenchConfig(), m, memory, {"exports": 1})


def test_instrumentation_cpu_is_the_median_of_per_round_differences() -> None:
    results = _synthetic(
        {
            ("health", "direct", "full"): [_load(900, 0.4), _load(900, 1.0), _load(900, 0.6)],
            ("health", "direct", "bare"): [_load(999, 0.35), _load(999, 0.5), _load(999, 0.3)],
            # a round without CPU counts for nothing; all rounds without: no number
            ("message", "direct", "full"): [_load(500, 2.0), _load(500, None), _load(500, 2.4)],
            ("message", "direct", "bare"): [_load(600, 1.5), _load(600, 1.0), _load(600, 1.6)],
        }
    )
    # differences 0.05, 0.5, 0.3: 0.3 (the difference of the medians would be 0.25)
    assert results["health"]["instrumentation_cpu_ms"] == 0.3
    assert results["message"]["instrumentation_cpu_ms"] == 0.65  # of 0.5 and 0.8
    missing = _synthetic({("health", "direct", "bare"): [_load(1000, None)] * 3})
    assert missing["health"]["instrumentation_cpu_ms"] is None
    target = missing["targets"]["health.instrumentation_cpu_ms"]
    assert target == {"value": None, "target": "<= 0.1", "met": False}
    assert (
        json.loads(json.dumps(missing, allow_nan=False))["health"]["instrumentation_cpu_ms"] is None
    )


def test_message_full_over_health_bare_pairs_the_same_round() -> None:
    results = _synthetic(
        {
            ("message", "direct", "full"): [_load(100), _load(200), _load(300)],
            ("health", "direct", "bare"): [_load(1000), _load(400), _load(2000)],
        }
    )
    # per round 0.1, 0.5, 0.15: 0.15 (medians 200 / 1000 = 0.2; sorted pairs 0.2 too)
    assert results["message"]["full_over_health_bare"] == 0.15
    assert results["targets"]["message.full_over_health_bare"] == {
        "value": 0.15, "target": ">= 0.3", "met": False
    }  # fmt: skip


def test_nginx_cpu_is_the_full_variants_health_gateway_runs() -> None:
    results = _synthetic(
        {
            ("health", "gateway", "full"): [_load(900, 0.5, n) for n in (0.07, 0.09, 0.05)],
            ("health", "gateway", "bare"): [_load(900, 0.3, 0.01)] * 3,
            ("message", "gateway", "full"): [_load(400, 3.0, 0.2)] * 3,
        }
    )
    assert results["gateway"]["nginx_cpu_ms_per_request"] == 0.07
    assert results["targets"]["gateway.nginx_cpu_ms_per_request"]["met"] is True
    without = _synthetic({("health", "gateway", "full"): [_load(900, 0.5, None)] * 3})
    assert without["gateway"]["nginx_cpu_ms_per_request"] is None


def test_every_target_is_evaluated_and_plain_numbers_go_to_json() -> None:
    results = _synthetic({})
    assert [key for key, _, _ in TARGETS] == list(results["targets"])
    assert results["targets"]["message.direct.bare.cpu_ms_per_request"] == {
        "value": 1.0, "target": "<= 1", "met": True
    }  # fmt: skip
    assert results["targets"]["message.full_over_peer"]["target"] == ">= 3"
    for key in ("health.instrumentation_cpu_ms", "message.instrumentation_cpu_ms"):
        assert results["targets"][key]["value"] == 0.0
    assert type(results["message"]["full_over_health_bare"]) is float
    assert type(results["gateway"]["nginx_cpu_ms_per_request"]) is float
    json.dumps(results, allow_nan=False)


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


# --- the chart ------------------------------------------------------------------------------------
def _parse(svg: str) -> ET.Element:
    """The SVG as XML (it must parse); the text is the chart module's own output."""
    return ET.fromstring(svg)  # noqa: S314


def _bars(svg: str) -> list[ET.Element]:
    return [r for r in _parse(svg).iter(f"{SVG}rect") if r.get("class") == "bar"]


def test_the_chart_has_one_bar_per_route_and_variant_proportional_to_rps() -> None:
    svg = chart.render(COMMITTED)
    bars = _bars(svg)
    expected = [(r, "direct", v) for r in ("health", "message") for v in ("full", "bare", "peer")]
    expected += [(r, "gateway", v) for r in ("health", "message") for v in ("full", "bare")]
    found = [
        (b.attrib["data-route"], b.attrib["data-where"], b.attrib["data-variant"]) for b in bars
    ]
    assert sorted(found) == sorted(expected)
    for (route, where, variant), bar in zip(found, bars, strict=True):
        assert float(bar.attrib["data-rps"]) == COMMITTED[route][where][variant]["rps"]
    for route in ("health", "message"):  # one axis per route: the same px per req/s
        panel = [b for b in bars if b.attrib["data-route"] == route]
        scales = [float(b.attrib["height"]) / float(b.attrib["data-rps"]) for b in panel]
        assert max(scales) == pytest.approx(min(scales), rel=1e-4)
        assert min(float(b.attrib["y"]) for b in panel) >= chart.PLOT_TOP  # the tallest fits


def test_the_chart_labels_cpu_names_the_run_and_is_deterministic() -> None:
    svg = chart.render(COMMITTED)
    texts = [t.text for t in _parse(svg).iter(f"{SVG}text")]
    health = COMMITTED["health"]
    assert f"{health['direct']['full']['cpu_ms_per_request']:.3f} ms" in texts
    assert f"+{health['gateway']['full']['gateway_cpu_ms_per_request']:.3f} nginx" in texts
    assert f"{health['direct']['full']['rps']:,.0f}" in texts
    when = COMMITTED["machine"]["date"][:16].replace("T", " ")
    assert any(f"{when} UTC" in t and "2 cores" in t for t in texts if t)
    for variant in ("full", "bare", "peer"):
        assert chart.LEGEND[variant] in texts
    assert chart.render(copy.deepcopy(COMMITTED)) == svg
    no_cpu = copy.deepcopy(COMMITTED)
    no_cpu["health"]["direct"]["full"]["cpu_ms_per_request"] = None
    assert "CPU n/a" in chart.render(no_cpu)


def test_the_committed_chart_is_drawn_from_the_committed_results() -> None:
    committed = (REPO / "bench" / "chart.svg").read_text()
    assert committed == chart.render(COMMITTED), (
        "rebuild it: uv run --frozen python -m stackctl.bench.chart bench/results.json"
    )


def test_results_and_chart_are_written_side_by_side(
    rebuilt: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "results.json"
    write_results(path, rebuilt)
    assert json.loads(path.read_text()) == rebuilt
    assert (tmp_path / "out" / "chart.svg").read_text() == chart.render(rebuilt)
    # and rebuilt from a results.json alone, as docs are refreshed
    (tmp_path / "out" / "chart.svg").unlink()
    chart.main([str(path)])
    assert (tmp_path / "out" / "chart.svg").read_text() == chart.render(rebuilt)
