"""Gunicorn settings shared by ``make serve``, ``cds-service serve`` and the Dockerfile.

gthread workers keep answering while a hook waits on an EHR's FHIR server (measured: sync workers
fall to ~38 req/s when each hook waits 50 ms; gthread with 8-16 threads holds 170-460 req/s).
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from cds_service.cpus import cpus_available


def _metrics_dir() -> str:
    """prometheus-client's multiprocess directory: fresh and private for each run of the master.

    Set here, in the master, before any app module is imported, so every worker writes its values
    there. An operator's PROMETHEUS_MULTIPROC_DIR is emptied at start (a previous run's files
    would be summed in); without one, a 0700 temporary directory is made and removed at exit.
    A configuration reload (SIGHUP) in the same master keeps the directory and its values.
    (A master killed with SIGKILL leaves its empty-ish directory under $TMPDIR behind.)
    """
    owner = os.environ.get("FOOTDROP_METRICS_OWNER")
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if chosen and owner == str(os.getpid()):
        return chosen
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        for stale in Path(chosen).glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        chosen = tempfile.mkdtemp(prefix="footdrop-cds-metrics-")
        # Removed when this master exits, also after a refused start (SystemExit in on_starting);
        # forked workers inherit the hook, and the pid check keeps them from running it.
        atexit.register(_remove_made_dir, chosen, os.getpid())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = chosen
    os.environ["FOOTDROP_METRICS_OWNER"] = str(os.getpid())
    return chosen


def _remove_made_dir(path: str, master: int) -> None:
    if os.getpid() == master:
        shutil.rmtree(path, ignore_errors=True)


_metrics_dir()

# gunicorn's runtime control socket defaults to one path in $HOME shared by every instance on the
# host; the service is managed by signals and its orchestrator, so it is off.
control_socket_disable = True
preload_app = False  # each worker builds its own app: no database or thread pool crosses a fork

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8080')}"
worker_class = "gthread"
# The CPUs this process may use (affinity and the cgroup v2 quota of a container), not the host's;
# WEB_CONCURRENCY wins when set.
workers = int(os.environ.get("WEB_CONCURRENCY", max(2, cpus_available())))
threads = int(os.environ.get("GUNICORN_THREADS", "12"))
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app logs one JSON line per request itself (without PHI). gunicorn's own lines are JSON too
# (cds_service.gunicorn_logging); its access log (path without query string) is off unless
# GUNICORN_ACCESS_LOG names a file or "-".
logger_class = "cds_service.gunicorn_logging.JsonLogger"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Header and request-line limits: a CDS call carries large bodies, never large headers.
limit_request_line = 8190
limit_request_fields = 100


def on_starting(server: object) -> None:
    """Check settings, content and database once in the master, before any worker boots.

    A mistake is one line on stderr and exit status 2, not a traceback from every worker.
    """
    import sys

    # Importing the app's modules here means workers fork with them loaded: a worker's boot is then
    # only create_app (content, database), about 0.05 s, not the 0.5-1 s of imports on top.
    import cds_service.edge.discovery
    import cds_service.edge.feedback_store
    import cds_service.edge.fhir_client
    import cds_service.web.api
    import cds_service.web.handlers
    import cds_service.web.hooks
    import cds_service.web.openapi  # noqa: F401
    from cds_service import load_content_and_services, open_feedback_store, open_replay_guard
    from cds_service.config import Settings
    from cds_service.errors import OperatorError

    try:
        settings = Settings.from_env()
        load_content_and_services(settings.content_dir)
        open_feedback_store(settings.database_url).dispose()
        if settings.auth:
            open_replay_guard(settings.replay_url).dispose()
    except OperatorError as error:
        print(f"cds-service: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def post_worker_init(worker: object) -> None:
    """A socket of this worker's own behind ``cds-service serve`` (nginx balances over them);
    then say where to click next once every worker has booted (see cds_service.ready).

    Behind nginx, ``cds-service serve`` prints that line itself once nginx answers and every
    worker has left its mark; alone, the worker that completes the first batch prints it.
    """
    import sys

    from cds_service.config import Settings
    from cds_service.ready import (
        announce_when_all_booted,
        browsable_base,
        mark_worker_ready,
        ready_line,
    )
    from cds_service.worker_sockets import adopt_slot

    adopt_slot(worker)
    if mark_worker_ready(os.getpid()):
        return
    cfg = getattr(worker, "cfg", None)
    binds = [str(b) for b in getattr(cfg, "bind", [])]
    if not binds or binds[0].startswith("unix:"):
        return
    host, _, port = binds[0].rpartition(":")
    base = browsable_base(host, int(port)) if port.isdigit() else f"http://{binds[0]}"
    line = ready_line(base, landing_page=not Settings.from_env().is_production)
    announce_when_all_booted(
        line,
        int(getattr(cfg, "workers", 1)),
        int(getattr(worker, "age", 0)),
        lambda text: print(text, file=sys.stderr, flush=True),
    )


def worker_exit(server: object, worker: object) -> None:
    """In the worker, as it exits: write every queued log line before the process ends."""
    from cds_service.logs import stop_logging

    stop_logging()


def child_exit(server: object, worker: object) -> None:
    """In the master: a dead worker's live gauges leave the sums (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
