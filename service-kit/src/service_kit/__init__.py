"""service_kit: what both services are built from, their app and its signals.

- The app: ``app`` (``create_service_app``: the service's routes, ``/health``, ``/metrics``,
  Swagger UI, the error envelope, root path, the middleware), ``docs`` (Swagger UI without a
  CDN), ``errors`` (the JSON error envelope), ``health``, ``settings``; and how gunicorn serves
  it: ``gunicorn_conf``, ``worker``.
- The signals: ``metrics`` (Prometheus), ``logs`` (JSON lines), ``tracing`` (OpenTelemetry
  traces), recorded for every request by ``middleware``, with the id from ``request_id``.

One package, not two: the middleware emits the error envelope and the app factory wires the
signals, so the two halves always change together.

Kept import-free on purpose: gunicorn's master imports ``service_kit.gunicorn_conf`` and
must not import prometheus_client before ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""
