"""OpenTelemetry traces: FastAPI server spans, W3C ``traceparent`` in, OTLP/HTTP out.

The app is instrumented when it is built; the TracerProvider (with its exporter thread) is made in
each worker's lifespan, after gunicorn forked, never in the master.
"""

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from instrumentation.settings import ObservabilitySettings


def instrument_app(app: FastAPI, settings: ObservabilitySettings) -> None:
    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=settings.tracing_excluded_urls,
        # The per-message "receive"/"send" spans double the cost of a request and say little.
        exclude_spans=["receive", "send"],
    )


def start_tracing(settings: ObservabilitySettings) -> TracerProvider | None:
    """Install this process's TracerProvider; returns it so the lifespan can flush it."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # already set in this process (tests build many apps)
        return None
    resource = Resource.create(
        {"service.name": settings.service_name, "service.version": settings.service_version}
    )
    # The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: parent-based,
    # always on), so an incoming traceparent's sampling decision is honoured.
    provider = TracerProvider(resource=resource)
    if settings.otel_exporter_otlp_endpoint:
        # The exporter reads OTEL_EXPORTER_OTLP_ENDPOINT itself and appends /v1/traces.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider
