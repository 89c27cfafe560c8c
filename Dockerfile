# TPS, and (with another command) its satellite-temperature simulator.
# The base image is pinned (patch release and Debian release) so a rebuild is the same.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TPS_HTTP_HOST=0.0.0.0 \
    TPS_HTTP_PORT=8000 \
    TPS_DATA_DIR=/data

WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY tps ./tps
RUN pip install . && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /data --create-home tps

USER tps
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000 4000

# Readiness, not liveness: /ready is 200 only while TPS can serve (store reachable,
# supervisor running), /health (liveness) stays 200 while degraded. Docker's "healthy"
# gates `depends_on: service_healthy`; it never restarts an unhealthy container.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TPS_HTTP_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/ready', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["tps"]
CMD ["serve"]
