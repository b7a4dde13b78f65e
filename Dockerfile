# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with its dependencies, then run it as a non-root user: nginx in front of
# gunicorn.

FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md LICENSE ./
COPY cds_service ./cds_service
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install ".[postgres,redis,codes]"

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    CDS_ENVIRONMENT=production \
    CDS_DATABASE_URL=sqlite:////var/lib/footdrop-cds/feedback.sqlite3
# nginx (Debian's package) fronts gunicorn against slow clients; `cds-service serve` starts both as
# the cds user, with nginx's configuration, pid and temp files in a private directory under /tmp.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system cds && useradd --system --gid cds --home /app --shell /usr/sbin/nologin cds \
 && mkdir -p /app /var/lib/footdrop-cds && chown cds:cds /var/lib/footdrop-cds
# The card content ships inside the package; mount a directory and set CDS_CONTENT_DIR to override.
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER cds
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT','8080'), timeout=2)" || exit 1
# Production needs CDS_PUBLIC_URL, CDS_JWT_ISSUERS, CDS_CORS_ORIGINS, CDS_FHIR_ORIGINS (and usually
# CDS_DATABASE_URL for PostgreSQL).
# `cds-service serve` runs nginx on $HOST:$PORT in front of gunicorn (python:cds_service.gunicorn_conf
# on a unix socket) and supervises both as PID 1: SIGTERM stops them gracefully, either exiting
# stops the other. Production refuses to start without nginx unless CDS_PROXY=off.
CMD ["cds-service", "serve"]
