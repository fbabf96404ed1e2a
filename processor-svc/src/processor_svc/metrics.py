"""processor-svc's own metrics."""

from prometheus_client import Counter

from service_kit.metrics import Metrics


class ProcessorMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.payload_bytes: Counter = metrics.counter(
            "processed_payload_bytes_total", "UTF-8 bytes of /process payloads processed."
        ).labels(metrics.service)
