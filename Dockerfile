# syntax=docker/dockerfile:1
#
# One Dockerfile for both FastAPI services. Build context: the repository root.
# The two images differ only in which workspace member is installed and in the final
# target (service name, port, gunicorn app); everything else is shared, so it lives once.
#
#   docker build --build-arg SERVICE=api-svc       --target api-svc       -t api-svc .
#   docker build --build-arg SERVICE=processor-svc --target processor-svc -t processor-svc .
#
# docker-compose.yml passes both (build.args.SERVICE and build.target). Each final target
# imports its own package at build time, so a SERVICE/target mismatch fails the build.

ARG PYTHON_IMAGE=python:3.12.15-slim-bookworm

# uv is copied from its pinned release image; it never reaches the runtime image.
FROM ghcr.io/astral-sh/uv:0.13.0 AS uv

# ---------------------------------------------------------------------------------------
# builder: resolves the service from uv.lock into /app/.venv (wheels only, no compiler).
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
COPY --from=uv /uv /bin/uv
WORKDIR /src

# 1) Dependencies only. uv needs the root pyproject, the lock and every workspace member's
#    pyproject.toml to resolve the workspace with --frozen; member sources are not needed
#    yet, so this layer is reused until the lock or a pyproject changes.
COPY pyproject.toml uv.lock ./
COPY service-kit/pyproject.toml service-kit/
COPY api-svc/pyproject.toml api-svc/
COPY processor-svc/pyproject.toml processor-svc/
COPY scripts/stackctl/pyproject.toml scripts/stackctl/
COPY testing/pgcluster/pyproject.toml testing/pgcluster/
COPY testing/testkit/pyproject.toml testing/testkit/
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -z "${SERVICE}" ]; then echo "build-arg SERVICE (api-svc|processor-svc) is required" >&2; exit 1; fi \
    && uv sync --frozen --no-dev --no-install-workspace --package "${SERVICE}"

# 2) Sources: the shared service-kit package and the one service being built,
#    installed as regular (non-editable) wheels so /src is not needed at run time.
COPY service-kit/src service-kit/src
COPY ${SERVICE}/src ${SERVICE}/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${SERVICE}"

# ---------------------------------------------------------------------------------------
# runtime: same slim base, the virtualenv only (root-owned, so not writable by the app).
# ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 -m 0700 /tmp/metrics
COPY --from=builder /app/.venv /app/.venv
WORKDIR /app
USER 10001:10001
# No curl in slim images: the probe uses the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

# ---------------------------------------------------------------------------------------
# final targets
# ---------------------------------------------------------------------------------------
FROM runtime AS api-svc
ENV SERVICE_NAME=api-svc \
    PORT=8000 \
    METRICS_PORT=9000
RUN ["python", "-c", "import api_svc, service_kit"]
# 8000: the API (through the gateway); 9000: /metrics, served by the gunicorn master.
EXPOSE 8000 9000
CMD ["gunicorn", "api_svc.main:app", "-c", "python:service_kit.gunicorn_conf"]

FROM runtime AS processor-svc
ENV SERVICE_NAME=processor-svc \
    PORT=8001 \
    METRICS_PORT=9001
RUN ["python", "-c", "import processor_svc, service_kit"]
EXPOSE 8001 9001
CMD ["gunicorn", "processor_svc.main:app", "-c", "python:service_kit.gunicorn_conf"]
