# TPS, and (with another command) its satellite-temperature simulator.
FROM python:3.11-slim

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

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TPS_HTTP_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["tps"]
CMD ["serve"]
