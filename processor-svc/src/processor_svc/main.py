"""processor-svc: ``gunicorn processor_svc.main:app -c python:service_kit.gunicorn_conf``."""

from fastapi import FastAPI

from processor_svc.config import Settings, get_settings
from processor_svc.metrics import ProcessorMetrics
from processor_svc.routes import process
from service_kit.app import create_service_app
from service_kit.metrics import Metrics


def create_app(settings: Settings | None = None) -> FastAPI:
    def setup(app: FastAPI, metrics: Metrics) -> None:
        app.state.processor_metrics = ProcessorMetrics(metrics)

    return create_service_app(
        settings or get_settings(),
        title="processor-svc",
        description="Echoes what it is sent after about half a second of simulated work.",
        routers=[process.router],
        setup=setup,
    )


app = create_app()
