"""The one line ``cds-service serve`` ends its start-up with: where to click next.

Printed once, after the service answers ``/healthz`` through the address people use, so a link
in it never leads to "connection refused".
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: How often the announcer asks, and for how long at most (the workers boot within seconds).
POLL_SECONDS = 0.1
READY_DEADLINE_SECONDS = 120.0
#: After the first answer, how long to wait for the other workers to finish booting, so that the
#: line comes after their start-up log lines (it is printed anyway when this runs out).
WORKERS_SECONDS = 15.0
#: Not a ``CDS_`` setting: the supervisor's private hand-over to its gunicorn workers.
READY_DIR_VARIABLE = "FOOTDROP_READY_DIR"


def mark_worker_ready(pid: int) -> bool:
    """In a booted worker: leave a mark for the supervisor's announcer (False if not asked)."""
    directory = os.environ.get(READY_DIR_VARIABLE)
    if not directory:
        return False
    with contextlib.suppress(OSError):
        (Path(directory) / f"worker-{pid}").touch()
    return True


def browsable_base(host: str, port: int) -> str:
    """``http://host:port`` for a browser: a wildcard bind becomes loopback, IPv6 in brackets."""
    name = host.strip("[]") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return f"http://{name}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def ready_line(base: str, *, landing_page: bool) -> str:
    """What to open next: the card preview in development, discovery always."""
    if landing_page:
        return (
            f"footdrop-cds ready: open {base}/ (card preview), "
            f"discovery at {base}/cds-services, API docs at {base}/docs"
        )
    return f"footdrop-cds ready on {base}: discovery at {base}/cds-services"


def answers(base: str, timeout: float = 2.0) -> bool:
    """Whether ``GET /healthz`` gets any HTTP answer (503 counts: the service is up to say so)."""
    host, _, port = base.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def announce_when_all_booted(
    line: str, workers: int, age: int, emit: Callable[[str], None]
) -> None:
    """Serving alone (no supervisor): each worker of the first batch marks a directory named after
    the gunicorn master; the one that completes the batch prints ``line`` (exactly once, through
    an exclusive create) and removes the directory."""
    if age > workers:  # a worker started later, to replace one: the start-up is long over
        return
    directory = Path(tempfile.gettempdir()) / f"footdrop-cds-ready-{os.getppid()}"
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        if directory.stat().st_uid != os.getuid():
            return
        (directory / f"worker-{os.getpid()}").touch()
        if len(list(directory.glob("worker-*"))) < workers:
            return
        os.close(os.open(directory / "announced", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:  # another worker announced (and may have removed the directory already)
        return
    emit(line)
    shutil.rmtree(directory, ignore_errors=True)


class Announcer:
    """A daemon thread that prints ``line`` once ``base`` answers and ``workers`` workers have
    marked ``ready_dir`` (see :func:`mark_worker_ready`), unless stopped first."""

    def __init__(
        self,
        base: str,
        line: str,
        emit: Callable[[str], None],
        ready_dir: Path | None = None,
        workers: int = 0,
    ) -> None:
        self.base = base
        self.line = line
        self.ready_dir = ready_dir
        self.workers = workers
        self._emit = emit
        self._stopped = threading.Event()
        self.announced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-announcer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        while not answers(self.base):
            if self._stopped.wait(POLL_SECONDS) or time.monotonic() > deadline:
                return
        booted = time.monotonic() + WORKERS_SECONDS
        while self._booted() < self.workers and time.monotonic() < booted:
            if self._stopped.wait(POLL_SECONDS):
                return
        if not self._stopped.is_set():
            self._emit(self.line)
            self.announced.set()

    def _booted(self) -> int:
        if self.ready_dir is None:
            return self.workers
        return len(list(self.ready_dir.glob("worker-*")))
