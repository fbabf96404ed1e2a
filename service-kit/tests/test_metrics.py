import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from testkit import metric_value, series_count


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    for item in range(1, 6):
        assert client.get(f"/items/{item}").status_code == 200
    text = client.get("/metrics").text
    labels = {"service": "test-svc", "method": "GET", "route": "/items/{item_id}"}
    assert metric_value(text, "app_http_requests_total", status="200", **labels) == 5
    assert metric_value(text, "app_http_request_duration_seconds_count", **labels) == 5
    assert 'item_id}",service="test-svc",status="200"' in text
    assert "/items/1" not in text


def test_random_paths_share_one_series(client: TestClient) -> None:
    client.get("/warm-up-unmatched")
    client.get("/metrics")  # the scrape route's own series exist from here on
    before = series_count(client.get("/metrics").text)
    for n in range(300):
        client.get(f"/random/{n}/path")
    after_text = client.get("/metrics").text
    assert series_count(after_text) == before
    assert (
        metric_value(
            after_text, "app_http_requests_total", route="unmatched", status="404", method="GET"
        )
        == 301
    )


def test_unknown_methods_are_grouped(client: TestClient) -> None:
    client.request("PROPFIND", "/health")
    text = client.get("/metrics").text
    assert metric_value(text, "app_http_requests_total", method="OTHER", status="405") == 1


def test_histogram_buckets_resolve_5ms_to_10s_with_the_slo_boundaries(client: TestClient) -> None:
    client.get("/health")
    text = client.get("/metrics").text
    for le in ("0.005", "0.5", "1.0", "10.0", "+Inf"):
        assert f'le="{le}"' in text


def test_buckets_and_namespace_are_settings(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_namespace="shop", metrics_buckets=(0.1, 2.0))
    client.get("/health")
    text = client.get("/metrics").text
    assert "shop_http_requests_total" in text
    assert "app_http_requests_total" not in text
    assert 'le="2.0"' in text
    assert 'le="0.5"' not in text


def test_build_info_and_in_flight(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert metric_value(text, "app_build_info", service="test-svc", version="0.1.0") == 1
    # The scrape itself is the one request in flight while the text is rendered.
    assert metric_value(text, "app_http_requests_in_flight", service="test-svc") == 1


def test_metrics_can_be_switched_off(make_client: Callable[..., TestClient]) -> None:
    client = make_client(metrics_enabled=False)
    assert client.get("/metrics").status_code == 404


# A fresh interpreter in multiprocess mode: a sample written after a fork lands in the child's
# own file, as with os.getpid(), although the pid is no longer asked for on every write.
FORKED_WRITES = """
import os, sys
from service_kit.metrics import Metrics, process_identifier
metrics = Metrics(namespace="app", service="s", version="1", buckets=(1.0,))
metrics.in_flight.inc()
child = os.fork()
if child == 0:
    metrics.in_flight.inc()
    os._exit(0 if process_identifier() == os.getpid() else 1)
_, status = os.waitpid(child, 0)
files = sorted(name for name in os.listdir(sys.argv[1]) if name.startswith("gauge_livesum"))
print(os.waitstatus_to_exitcode(status), files == sorted(
    [f"gauge_livesum_{os.getpid()}.db", f"gauge_livesum_{child}.db"]
))
"""


def test_samples_written_after_a_fork_go_to_the_childs_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FORKED_WRITES, str(tmp_path)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["0", "True"]
