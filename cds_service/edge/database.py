"""SQLAlchemy engines with durable settings: SQLite in WAL with synchronous FULL, or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


class StoreUnavailableError(RuntimeError):
    """The database cannot be reached or refused the write; nothing was acknowledged."""


def make_engine(database_url: str, *, durable: bool = True) -> Engine:
    """An engine for ``database_url``; SQLite files get their folder and WAL pragmas.

    ``durable`` (feedback) syncs every commit to disk. The JWT replay guard passes False: losing
    its last rows in a power cut only reopens replay for tokens that expire within minutes, and a
    full sync per call would cap hook throughput.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        if not durable:
            event.listen(engine, "connect", _sqlite_normal_sync)
        return engine
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", ""):
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def _sqlite_normal_sync(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the writer; FULL makes every commit survive power loss."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
