"""The observability part of every service's settings (one typed object per service)."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# 5 ms .. 10 s, with the 0.5 s and 1 s boundaries the latency SLO and alerts are written against.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class ObservabilitySettings(BaseSettings):
    """Read from the environment; a service subclasses it and adds its own fields."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    service_name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")
    service_version: str = "0.1.0"
    # Prefix the gateway routes to this service (e.g. /api); Swagger's "Try it out" uses it.
    root_path: str = Field(default="", pattern=r"^(/[A-Za-z0-9_-]+)*$")
    docs_enabled: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    metrics_enabled: bool = True
    metrics_namespace: str = Field(default="app", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    metrics_buckets: tuple[float, ...] = Field(default=DEFAULT_BUCKETS, min_length=1)

    access_log_enabled: bool = True

    tracing_enabled: bool = True
    # Regexes (comma separated) searched in the URL; probes and scrapes are noise in traces.
    tracing_excluded_urls: str = "/health$,/ready$,/metrics$"
    # Spans are exported over OTLP/HTTP only when this is set (the standard OTel variable).
    otel_exporter_otlp_endpoint: str | None = None
