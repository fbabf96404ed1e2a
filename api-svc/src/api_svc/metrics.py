"""api-svc's own metrics."""

from service_kit.metrics import Metrics


class MessageMetrics:
    def __init__(self, metrics: Metrics) -> None:
        lookups = metrics.counter(
            "message_lookups_total", "GET /message/{id} outcomes.", ("result",)
        )
        self.found = lookups.labels(metrics.service, "found")
        self.not_found = lookups.labels(metrics.service, "not_found")
        self.search_seconds = metrics.histogram(
            "message_search_duration_seconds", "Time of the search query in PostgreSQL."
        ).labels(metrics.service)
