"""Replay protection for client-authentication JWTs (CDS Hooks 2.0 §"Trusting CDS Clients").

A CDS client puts a unique ``jti`` in every JWT.  A token whose ``(iss, jti)`` pair has already
been seen while the token could still be accepted is a replay and must be refused.  Because the
service runs as several gunicorn worker *processes* (and instances), the "seen" set has to live
in a shared store, not in process memory: :class:`SqlReplayGuard` inserts one row per accepted
token in SQLite or PostgreSQL and relies on the primary key to detect a second use atomically,
whichever worker receives it; :mod:`cds_service.edge.replay_redis` does the same with Redis or
Valkey (``SET key NX PX``).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from .database import StoreUnavailableError

__all__ = [
    "MAX_ISSUER_LENGTH",
    "MAX_JTI_LENGTH",
    "ReplayGuard",
    "SqlReplayGuard",
    "jwt_replay_table",
    "metadata",
]

#: Longest ``iss`` / ``jti`` accepted.  Both form the primary key; 255 characters each keep the
#: index entry below PostgreSQL's B-tree limit even for 4-byte UTF-8 characters.
MAX_ISSUER_LENGTH = 255
MAX_JTI_LENGTH = 255

#: The replay table has its own MetaData so that it can be created independently of any other
#: schema the service uses (``SqlReplayGuard`` calls ``metadata.create_all``).
metadata = sa.MetaData()

jwt_replay_table = sa.Table(
    "jwt_replay",
    metadata,
    sa.Column("iss", sa.String(MAX_ISSUER_LENGTH), primary_key=True),
    sa.Column("jti", sa.String(MAX_JTI_LENGTH), primary_key=True),
    # POSIX seconds after which the row may be purged (token exp + leeway).
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)


@runtime_checkable
class ReplayGuard(Protocol):
    """Remembers ``(issuer, jti)`` pairs until they expire."""

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        """Record the pair; ``True`` the first time, ``False`` if it is already held (a replay).

        ``expires_at`` (POSIX seconds) is when the pair may be forgotten: after it the token
        carrying it is no longer acceptable anyway.
        """
        ...

    def dispose(self) -> None:
        """Release connections (shutdown)."""
        ...

    def probe(self) -> None:
        """Raise unless a claim can be written now (for /healthz: locks, full disk, outage)."""
        ...


#: The issuer under which /healthz probes write; never a real issuer (not a URL).
PROBE_ISSUER = "footdrop-cds health probe"


class SqlReplayGuard:
    """A :class:`ReplayGuard` backed by the ``jwt_replay`` table (SQLite or PostgreSQL).

    * One statement per claim: ``INSERT … ON CONFLICT (iss, jti) DO UPDATE SET expires_at = …
      WHERE jwt_replay.expires_at <= now``. It inserts a new pair, takes over a held pair whose
      row has expired (not yet purged), and changes nothing for a live pair; one row changed
      means granted. The database makes it atomic across workers and instances.
    * SQLite has one writer at a time, and threads that each wait for its lock sleep in
      growing steps (the busy handler): measured, 16 claimers in 2 processes had a p99 of 61 ms
      and a max of 0.5 s. So on SQLite the claims of a process go to one writer thread
      (:class:`_SqliteWriter`), which writes every claim waiting in one short transaction: the
      lock is taken once per batch and only the processes contend for it, not their threads.
    * On PostgreSQL a claim runs on the calling thread through the engine's pool (rows are
      locked per key, claims do not wait on each other).
    * Expired rows are deleted off the hot path: on SQLite by the writer thread, in chunks,
      between batches or when idle; on PostgreSQL by a background thread, at most once every
      ``purge_interval_seconds`` per instance. :meth:`purge_expired` does it on demand.
    * The table is created at construction (``create_all`` on this module's own MetaData;
      tolerant of another worker creating it at the same moment).
    """

    def __init__(
        self,
        engine: sa.Engine,
        clock: Callable[[], float] = time.time,
        *,
        purge_interval_seconds: float = 60.0,
        wait_seconds: float = 10.0,
    ) -> None:
        if not (math.isfinite(purge_interval_seconds) and purge_interval_seconds >= 0):
            raise ValueError("purge_interval_seconds must be a finite number >= 0")
        if not (math.isfinite(wait_seconds) and wait_seconds > 0):
            raise ValueError("wait_seconds must be a finite number > 0")
        self._engine = engine
        self._clock = clock
        self._purge_interval = purge_interval_seconds
        self._next_purge_at = -math.inf
        self._purge_lock = threading.Lock()
        self._purge_thread: threading.Thread | None = None
        self._create_table()
        self._upsert = _upsert_statement(engine.dialect.name)
        self._writer = (
            _SqliteWriter(self, wait_seconds) if engine.dialect.name == "sqlite" else None
        )

    def _create_table(self) -> None:
        try:
            metadata.create_all(self._engine, checkfirst=True)
        except (IntegrityError, OperationalError, ProgrammingError):
            # Another worker may have created the table between our existence check and our
            # CREATE TABLE (PostgreSQL reports that as a duplicate table or a pg_type unique
            # violation).  Only a table that still does not exist is a real failure.
            if not sa.inspect(self._engine).has_table(jwt_replay_table.name):
                raise

    def dispose(self) -> None:
        """Stop the writer thread (SQLite) and close pooled connections (shutdown)."""
        if self._writer is not None:
            self._writer.stop()
        purge = self._purge_thread
        if purge is not None:
            purge.join(timeout=10)
        self._engine.dispose()

    def probe(self) -> None:
        """Write (and let expire) one claim, exactly as a hook would; raises what a hook would."""
        now = self._clock()
        self.claim(PROBE_ISSUER, f"{uuid.uuid4()}", now + 1.0)

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        expires_at = checked_claim(issuer, jti, expires_at)
        if self._writer is not None:
            return self._writer.claim(issuer, jti, expires_at)
        now = self._clock()
        if now >= self._next_purge_at:
            self._purge_in_background(now)
        with self._engine.begin() as conn:
            return self._write(conn, issuer, jti, expires_at, now)

    def _write(
        self, conn: sa.Connection, issuer: str, jti: str, expires_at: float, now: float
    ) -> bool:
        params = {"iss": issuer, "jti": jti, "expires_at": expires_at, "now": now}
        result = conn.execute(self._upsert, params)
        if self._writer is None:  # PostgreSQL: RETURNING
            return result.first() is not None
        return result.rowcount == 1

    def purge_expired(self) -> int:
        """Delete every row whose ``expires_at`` has passed; return how many were deleted."""
        now = self._clock()
        with self._engine.begin() as conn:
            result = conn.execute(
                jwt_replay_table.delete().where(jwt_replay_table.c.expires_at <= now)
            )
        self._next_purge_at = now + self._purge_interval
        return result.rowcount

    def _purge_in_background(self, now: float) -> None:
        """At most one purge per interval per instance, in its own thread, never in a hook's."""
        if not self._purge_lock.acquire(blocking=False):
            return
        if now < self._next_purge_at:
            self._purge_lock.release()
            return
        self._next_purge_at = now + self._purge_interval

        def purge() -> None:
            try:
                self.purge_expired()
            except SQLAlchemyError:  # the next interval tries again; claims are unaffected
                pass
            finally:
                self._purge_lock.release()

        self._purge_thread = threading.Thread(target=purge, name="replay-purge", daemon=True)
        self._purge_thread.start()

    # --- SQLite writer thread helpers -------------------------------------------------------

    def _purge_chunk(self, conn: sa.Connection, now: float) -> None:
        """Delete up to PURGE_CHUNK expired rows if a purge is due (SQLite writer thread)."""
        if now < self._next_purge_at:
            return
        table = jwt_replay_table
        rowid: sa.ColumnClause[Any] = sa.literal_column("rowid")
        expired = sa.select(rowid).where(table.c.expires_at <= now).limit(PURGE_CHUNK)
        with conn.begin():
            deleted = conn.execute(
                table.delete().where(rowid.in_(expired.scalar_subquery()))
            ).rowcount
        if deleted < PURGE_CHUNK:  # all gone: wait an interval; else the next chunk goes next
            self._next_purge_at = now + self._purge_interval


#: Expired rows deleted per SQLite transaction: the lock is held for about a millisecond.
PURGE_CHUNK = 500
#: Claims written per SQLite transaction at most.
MAX_BATCH = 256


def _upsert_statement(dialect: str) -> sa.Insert:
    """Insert the pair, or take over its row if that has expired; else change nothing."""
    from sqlalchemy.dialects import postgresql, sqlite

    table = jwt_replay_table
    only_expired = table.c.expires_at <= sa.bindparam("now")
    keys = [table.c.iss, table.c.jti]
    if dialect == "sqlite":
        lite = sqlite.insert(table)
        return lite.on_conflict_do_update(
            index_elements=keys, set_={"expires_at": lite.excluded.expires_at}, where=only_expired
        )
    if dialect == "postgresql":
        pg = postgresql.insert(table)
        # psycopg reports no rowcount for an upsert: a returned row says one was written.
        return pg.on_conflict_do_update(
            index_elements=keys, set_={"expires_at": pg.excluded.expires_at}, where=only_expired
        ).returning(sa.literal(1))
    raise ValueError(f"replay store: {dialect} is not supported (SQLite or PostgreSQL)")


class _Pending:
    """One claim waiting for the writer thread."""

    __slots__ = ("done", "error", "expires_at", "granted", "issuer", "jti")

    def __init__(self, issuer: str, jti: str, expires_at: float) -> None:
        self.issuer = issuer
        self.jti = jti
        self.expires_at = expires_at
        self.done = threading.Event()
        self.granted = False
        self.error: BaseException | None = None


_STOP = object()


class _SqliteWriter:
    """One thread per process writes the claims of all request threads, many per transaction.

    A claim waits at most ``wait_seconds`` (the store locked by another process, a full disk):
    then the hook gets 503, as it would from a lock wait.  Started on first use and again after
    a fork, so a gunicorn master that opened the store never hands a thread to its workers.
    """

    def __init__(self, guard: SqlReplayGuard, wait_seconds: float) -> None:
        self._guard = guard
        self._wait = wait_seconds
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        pending = _Pending(issuer, jti, expires_at)
        self._ensure_running()
        self._queue.put(pending)
        # The writer's own lock wait is bounded by the same busy timeout; the margin covers a
        # batch that started just before this claim arrived.
        if not pending.done.wait(2 * self._wait + 1.0):
            raise StoreUnavailableError("the replay store did not answer in time")
        if pending.error is not None:
            raise pending.error
        return pending.granted

    def _ensure_running(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="replay-writer", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive() and self._pid == os.getpid():
            self._queue.put(_STOP)
            thread.join(timeout=2 * self._wait + 1.0)

    def _run(self, inbox: queue.SimpleQueue[object]) -> None:
        guard = self._guard
        conn: sa.Connection | None = None
        idle = max(guard._purge_interval, 0.05)
        try:
            while True:
                try:
                    first = inbox.get(timeout=idle)
                except queue.Empty:  # idle: purge now rather than while claims wait
                    conn = self._purge_when_idle(conn)
                    continue
                batch: list[_Pending] = []
                stop = first is _STOP
                if isinstance(first, _Pending):
                    batch.append(first)
                while not stop and len(batch) < MAX_BATCH:
                    try:
                        item = inbox.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(item, _Pending):
                        batch.append(item)
                    else:
                        stop = True
                if batch:
                    conn = self._write_batch(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _write_batch(
        self, conn: sa.Connection | None, batch: list[_Pending]
    ) -> sa.Connection | None:
        guard = self._guard
        try:
            if conn is None:
                conn = guard._engine.connect()
            now = guard._clock()
            guard._purge_chunk(conn, now)
            with conn.begin():
                granted = [guard._write(conn, p.issuer, p.jti, p.expires_at, now) for p in batch]
        except Exception as error:
            for pending in batch:
                pending.error = error
                pending.done.set()
            if conn is not None:
                conn.close()
            return None
        for pending, ok in zip(batch, granted, strict=True):
            pending.granted = ok
            pending.done.set()
        return conn

    def _purge_when_idle(self, conn: sa.Connection | None) -> sa.Connection | None:
        guard = self._guard
        try:
            if conn is None:
                conn = guard._engine.connect()
            guard._purge_chunk(conn, guard._clock())
        except SQLAlchemyError:  # tried again later; claims are unaffected
            if conn is not None:
                conn.close()
            return None
        return conn


def checked_claim(issuer: str, jti: str, expires_at: float) -> float:
    """The claim's expiry as a finite float; ValueError for an unusable issuer, jti or expiry
    (every store refuses the same arguments the same way)."""
    _check_key_part("issuer", issuer, MAX_ISSUER_LENGTH)
    _check_key_part("jti", jti, MAX_JTI_LENGTH)
    expires = float(expires_at)
    if not math.isfinite(expires):
        raise ValueError("expires_at must be a finite number")
    return expires


def _check_key_part(name: str, value: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"{name} is longer than {max_length} characters")
