# Vigil server image: `docker build -t vigil .` then `docker run -p 8000:8000 vigil`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIGIL_DATA_DIR=/var/lib/vigil \
    VIGIL_MIGRATIONS_DIR=/opt/vigil/alembic \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /opt/vigil
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY monitor ./monitor
COPY dashboard ./dashboard
COPY simulators ./simulators
COPY contracts ./contracts
COPY vigil ./vigil
COPY alembic ./alembic
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /var/lib/vigil --create-home vigil

USER vigil
VOLUME ["/var/lib/vigil"]
EXPOSE 8000
# Liveness, not readiness: Docker (and Swarm, and autoheal tools) restart an unhealthy
# container, and a restart cures a wedged process but not a database or broker outage; it
# would only blank every screen meanwhile. /readyz names those outages, for load balancers
# and monitoring (README: "Health, readiness and metrics").
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["vigil", "serve", "--host", "0.0.0.0", "--port", "8000"]
