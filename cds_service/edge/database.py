"""SQLAlchemy engines with durable settings: SQLite in WAL with synchronous FULL, or PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class StoreUnavailableError(RuntimeError):
    """The database cannot be reached or refused the write; nothing was acknowledged."""


#: How long a feedback write may wait for a lock or a pooled connection.
FEEDBACK_WAIT_SECONDS = 10.0
#: How long a hook's replay claim may wait: a held lock or a stuck database costs a hook this
#: much at most, then 503, never the seconds a feedback batch may take.
REPLAY_WAIT_SECONDS = 0.5
#: PostgreSQL connections one replay engine (one worker) may open: one per request thread
#: (gunicorn_conf's 12) at most, 4 kept open; measured: a pool of 5+5 made 32 claimers in a
#: process wait for a slot (p99 110 ms at 64 claimers in 2 processes, max 1.4 s).
REPLAY_POOL = (4, 8)


def make_engine(
    database_url: str, *, durable: bool = True, wait_seconds: float = FEEDBACK_WAIT_SECONDS
) -> Engine:
    """An engine for ``database_url``; SQLite files get their folder and WAL pragmas.

    ``durable`` (feedback) syncs every commit to disk. The JWT replay guard passes False: losing
    its last rows in a power cut only reopens replay for tokens that expire within minutes, and a
    full sync per call would cap hook throughput (SQLite ``synchronous=NORMAL``; PostgreSQL
    ``synchronous_commit=off``: a crash of the server loses at most its last ~0.6 s of commits,
    a clean restart nothing; the table stays logged, unlike an UNLOGGED table, which a crash
    empties). ``wait_seconds`` bounds every wait: a lock (SQLite busy timeout, PostgreSQL lock
    and statement timeouts), a connection, a pool slot.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": wait_seconds})
        event.listen(engine, "connect", _sqlite_pragmas(durable, wait_seconds))
        return engine
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", ""):
        url = url.set(drivername="postgresql+psycopg")
    millis = max(1, int(wait_seconds * 1000))
    pool_size, max_overflow = (5, 5) if durable else REPLAY_POOL
    options = f"-c lock_timeout={millis} -c statement_timeout={4 * millis}"
    if not durable:
        options += " -c synchronous_commit=off"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=wait_seconds,
        connect_args={
            "connect_timeout": max(1, math.ceil(wait_seconds)),
            "options": options,
        },
    )


def _sqlite_pragmas(durable: bool, wait_seconds: float) -> Callable[[Any, Any], None]:
    """WAL lets readers run beside the writer; FULL makes every commit survive power loss."""
    synchronous = "FULL" if durable else "NORMAL"
    busy = max(1, int(wait_seconds * 1000))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={busy}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect
