"""What a load costs the serving processes: CPU time per request of a gunicorn master and its
workers (and of nginx when the requests go through it), and the workers' resident memory.
Read from /proc (stackctl.procfs)."""

import os
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace

from stackctl import procfs
from stackctl.bench.deployments import Deployment
from stackctl.bench.load import Load, Scrapes, run_load, wrk_seconds
from stackctl.bench.settings import SERVICES

MEMORY_METRIC = "app_http_requests_total{"


def cpu_seconds(master: int) -> float:
    """User + system CPU time of a gunicorn master (or nginx's) and its live workers."""
    return procfs.cpu_seconds((master, *procfs.children(master)))


def accounted(
    deployment: Deployment,
    service: str,
    wrk: list[str],
    *,
    via_gateway: bool,
    scrape: str | None = None,
    scrape_after: float = 0.0,
) -> tuple[Load, Scrapes | None]:
    """run_load, plus CPU per request of the serving gunicorn (and of nginx when the
    requests go through it) and the machine's load average."""
    masters = {"service": deployment.masters[service]}
    if via_gateway:
        masters["gateway"] = deployment.masters["gateway"]
    load_average = os.getloadavg()[0]
    before = {name: cpu_seconds(pid) for name, pid in masters.items()}
    load, scrapes = run_load(wrk, wrk_seconds(wrk) + 40, scrape, scrape_after)
    per_request = {
        name: round((cpu_seconds(pid) - before[name]) * 1000 / max(1, load.requests), 3)
        for name, pid in masters.items()
    }
    load = replace(
        load,
        cpu_ms_per_request=per_request["service"],
        gateway_cpu_ms_per_request=per_request.get("gateway"),
        load_average=round(load_average, 2),
    )
    return load, scrapes


@dataclass
class Memory:
    """Resident memory (kB) of each gunicorn worker, by variant, service and pid."""

    taken_at: float
    workers: dict[str, dict[str, dict[int, int]]]
    requests_served: float


def worker_rss_kb(master: int) -> dict[int, int]:
    """VmRSS of each child of a gunicorn master (its workers)."""
    rss = {}
    for pid in procfs.children(master):
        if (kb := procfs.rss_kb(pid)) is not None:
            rss[pid] = kb
    return rss


def requests_total(url: str) -> float:
    """The sum of app_http_requests_total in one scrape (how much the full variant served)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own URL
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(MEMORY_METRIC)
    )


def take_memory(deployments: Mapping[str, Deployment]) -> Memory:
    workers = {
        variant: {name: worker_rss_kb(deployment.masters[name]) for name in SERVICES}
        for variant, deployment in deployments.items()
    }
    full = deployments["full"]
    served = sum(requests_total(full.metrics_url(name)) for name in SERVICES)
    return Memory(time.monotonic(), workers, served)
