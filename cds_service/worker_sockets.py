"""One unix socket per gunicorn worker, so that nginx balances requests over the workers.

gunicorn's workers share one listening socket and each accepts what it can: measured with 16
keep-alive clients through nginx, one worker served 80 % of the hook calls (and 82-100 % in
2 of 3 runs while nginx kept its upstream connections). With a socket of its own per worker,
nginx's ``least_conn`` sends each request to the worker with the fewest in flight.

``cds-service serve`` sets :data:`ENV` to ``<runtime dir>:<workers>``; gunicorn's
``post_worker_init`` hook (cds_service/gunicorn_conf.py) calls :func:`adopt_slot`, which binds
the first free ``worker-<n>.sock`` (a dead worker's socket is taken over by its replacement)
and puts it in front of the worker's listeners. The shared socket stays as nginx's ``backup``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["ENV", "adopt_slot", "slot_paths"]

#: Set by ``cds-service serve`` for gunicorn only: ``<directory>:<number of workers>``.
ENV = "FOOTDROP_WORKER_SOCKETS"


def slot_paths(directory: Path, workers: int) -> list[Path]:
    """The per-worker socket paths nginx balances over."""
    return [directory / f"worker-{n}.sock" for n in range(workers)]


def adopt_slot(worker: Any, environ: dict[str, str] | None = None) -> Path | None:
    """Bind a free slot socket and make it the worker's first listener; its path, or None."""
    setting = (environ if environ is not None else os.environ).get(ENV, "")
    directory, _, count = setting.rpartition(":")
    if not directory or not count.isdigit():
        return None
    paths = slot_paths(Path(directory), int(count))
    with _slot_lock(Path(directory)):
        for path in paths:
            listener = _bind(path)
            if listener is not None:
                worker.sockets = [listener, *worker.sockets]
                return path
    return None  # more workers than slots (never with serve): the shared socket still serves


@contextlib.contextmanager
def _slot_lock(directory: Path) -> Any:
    """Workers booting together choose their slots one at a time."""
    with open(directory / "worker-slots.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _bind(path: Path) -> socket.socket | None:
    """A listening socket on ``path``; a stale file (its worker gone) is replaced."""
    if path.exists():
        if not _stale(path):
            return None
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            return None
        raise
    listener.listen(2048)
    return listener


def _stale(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return True
        except OSError:
            return False
    return False
