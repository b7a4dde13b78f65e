"""JSON log lines with operational fields only: never names, identifiers, tokens or bodies.

Records are handed to a queue on the request thread (a ``QueueHandler``) and written by one
listener thread per process (a ``QueueListener``): a request never waits on the stderr lock
(measured in issue 14: 19 % of thread time waited on it). The listener is stopped, and the queue
drained, at exit (``atexit``) and in gunicorn's ``worker_exit``, so nothing logged is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import sys
import threading
from datetime import UTC, datetime
from typing import Any

# Only these ``extra`` fields are ever written; anything else passed by mistake is dropped.
ALLOWED_FIELDS = (
    "event",
    "hook_instance",
    "service_id",
    "hook",
    "method",
    "path",
    "status",
    "duration_ms",
    "cards",
    "resources",
    "skipped",
    "fetched_keys",
    "fetch_failures",
    "items",
    "stored",
    "duplicates",
    "reason",
    "key",
    "error_class",
    "where",
    "elapsed_ms",
    "count",
    "pages",
    "keys",
    "issuer",
    "settings",
    "version",
    "prefetched",
    "missing",
    "indicators",
    "suggestions",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, restricted to ALLOWED_FIELDS; ``pid`` tells workers apart."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        return json.dumps(line, separators=(",", ":"), default=str)


class _QueueHandler(logging.handlers.QueueHandler):
    """Enqueue a copy with the message merged; never the traceback (it may quote data)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        copy = logging.makeLogRecord(record.__dict__)
        copy.msg = record.getMessage()
        copy.args = None
        copy.exc_info = None
        copy.exc_text = None
        copy.stack_info = None
        return copy


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when the line is written (it may have been replaced
    since start-up: a redirect, a test's capture), never to a stream closed in the meantime."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _Listener(logging.handlers.QueueListener):
    """The writer thread; a flush marker (see :func:`flush_logging`) is answered, not written."""

    def handle(self, record: logging.LogRecord) -> None:
        marker = record.__dict__.get("_cds_flush")
        if isinstance(marker, threading.Event):
            marker.set()
            return
        # A failure here has nowhere left to be reported; the writer thread must live on.
        with contextlib.suppress(Exception):
            super().handle(record)


class _Pipeline:
    """This process's queue, listener thread and the handler on the ``cds_service`` logger."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listener: _Listener | None = None
        self.handler: _QueueHandler | None = None
        self.pid: int | None = None


_pipeline = _Pipeline()


def configure_logging(level: str) -> None:
    """Send the ``cds_service`` loggers to stderr as JSON through a queue, once per process.

    In a forked process (a gunicorn worker forked after the master logged) the inherited
    listener thread does not exist: a fresh queue and listener are started for this process.
    """
    import os

    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    logger.propagate = False
    with _pipeline.lock:
        if _pipeline.pid == os.getpid() and _pipeline.listener is not None:
            return
        for old in list(logger.handlers):
            if old is _pipeline.handler or getattr(old, "_cds_direct", False):
                logger.removeHandler(old)
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        output = _StderrHandler()
        output.setFormatter(JsonFormatter())
        output._cds_direct = True  # type: ignore[attr-defined]
        handler = _QueueHandler(records)
        listener = _Listener(records, output, respect_handler_level=False)
        listener.start()
        logger.addHandler(handler)
        _pipeline.listener, _pipeline.handler, _pipeline.pid = listener, handler, os.getpid()


def stop_logging() -> None:
    """Write every queued line and stop the listener (idempotent; exit and worker_exit)."""
    import os

    with _pipeline.lock:
        listener = _pipeline.listener
        if listener is None or _pipeline.pid != os.getpid():
            return
        _pipeline.listener = None
        _pipeline.pid = None
        handler = _pipeline.handler
        _pipeline.handler = None
    logger = logging.getLogger("cds_service")
    # Lines logged after this (a worker's last clean-up) are written directly, in the same format.
    for output in listener.handlers:
        logger.addHandler(output)
    if handler is not None:
        logger.removeHandler(handler)
    listener.stop()  # enqueues a sentinel and joins: everything before it is written
    for output in listener.handlers:
        with contextlib.suppress(ValueError, OSError):  # stderr already closed
            output.flush()


def flush_logging(timeout: float = 5.0) -> bool:
    """Wait until every line queued so far is written (tests; True when it was in time)."""
    with _pipeline.lock:
        listener = _pipeline.listener
    if listener is None:
        return True
    written = threading.Event()
    listener.queue.put_nowait(logging.makeLogRecord({"_cds_flush": written}))
    return written.wait(timeout)


atexit.register(stop_logging)
