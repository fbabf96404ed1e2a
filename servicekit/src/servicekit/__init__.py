"""Metrics, JSON logs, traces, request ids and the error envelope shared by both services.

Kept import-free on purpose: gunicorn's master imports ``servicekit.gunicorn_conf`` and
must not import prometheus_client before ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""
