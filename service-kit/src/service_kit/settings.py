"""The observability and serving part of every service's settings (one typed object per
process: each worker's app builds its service's subclass; the gunicorn master builds
GunicornSettings, from the same fields with the same validation)."""

from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceParsingError

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

    # How gunicorn serves the app (service_kit.gunicorn_conf). The app itself ignores them;
    # they are here so that the master and the workers read one definition. Every interface
    # by default: a container's only one.
    bind_host: str = Field(default="0.0.0.0", min_length=1)  # noqa: S104
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=2, ge=1)
    # SIGTERM: seconds in-flight requests get to finish before the workers are killed.
    graceful_timeout: int = Field(default=30, ge=0)
    # When set (and metrics_enabled), the gunicorn master serves all workers' metrics there.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        # METRICS_PORT= (empty) switches the master's endpoint off, as leaving it out does.
        return None if value == "" else value


class GunicornSettings(ObservabilitySettings):
    """The gunicorn master's settings. It runs before any app is imported, so it does not
    know the service's own subclass; a master started without SERVICE_NAME logs as gunicorn."""

    service_name: str = Field(default="gunicorn", pattern=r"^[a-z][a-z0-9-]{0,62}$")


class InvalidSettingsError(ValueError):
    """Settings from the environment that do not validate; the message names each variable."""


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def from_environment(settings_class: type[SettingsT]) -> SettingsT:
    """``settings_class()``, read from the environment; invalid values raise InvalidSettingsError
    with one line per variable: its name, the value given and what was expected."""
    title = f"invalid settings in the environment ({settings_class.__name__})"
    try:
        return settings_class()
    except SourceParsingError as exc:  # a list or tuple value that is not JSON
        raise InvalidSettingsError(f"{title}:\n  {exc}") from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field, *rest = (str(part) for part in error["loc"])
            name = field.upper() + "".join(f"[{part}]" for part in rest)
            # A missing value has no input of its own (pydantic gives all of them: secrets).
            given = "" if error["type"] == "missing" else f"={error['input']!r}"
            problems.append(f"  {name}{given}: {error['msg']}")
        raise InvalidSettingsError(f"{title}:\n" + "\n".join(problems)) from None
