"""Gunicorn settings shared by ``make serve``, ``cds-service serve`` and the Dockerfile.

gthread workers keep answering while a hook waits on an EHR's FHIR server (measured: sync workers
fall to ~38 req/s when each hook waits 50 ms; gthread with 8-16 threads holds 170-460 req/s).
"""

import multiprocessing
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("GUNICORN_THREADS", "12"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app logs one JSON line per request itself (without PHI); gunicorn's access log would add URLs.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Header and request-line limits: a CDS call carries large bodies, never large headers.
limit_request_line = 8190
limit_request_fields = 100
