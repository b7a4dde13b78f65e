"""Replay protection for client-authentication JWTs (CDS Hooks 2.0 §"Trusting CDS Clients").

A CDS client puts a unique ``jti`` in every JWT.  A token whose ``(iss, jti)`` pair has already
been seen while the token could still be accepted is a replay and must be refused.  Because the
service runs as several gunicorn worker *processes*, the "seen" set has to live in the shared
database, not in process memory: :class:`SqlReplayGuard` inserts one row per accepted token and
relies on the primary key to detect a second use atomically, whichever worker receives it.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

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

    * ``claim`` INSERTs ``(iss, jti, expires_at)``; a primary-key violation means the pair is
      already held.  A held row that has itself expired (not yet purged) is taken over with a
      conditional UPDATE, which is atomic across workers too.
    * Expired rows are deleted opportunistically, at most once every ``purge_interval_seconds``
      per instance, from inside ``claim``; :meth:`purge_expired` does it on demand.
    * The table is created at construction (``create_all`` on this module's own MetaData;
      tolerant of another worker creating it at the same moment).
    """

    def __init__(
        self,
        engine: sa.Engine,
        clock: Callable[[], float] = time.time,
        *,
        purge_interval_seconds: float = 60.0,
    ) -> None:
        if not (math.isfinite(purge_interval_seconds) and purge_interval_seconds >= 0):
            raise ValueError("purge_interval_seconds must be a finite number >= 0")
        self._engine = engine
        self._clock = clock
        self._purge_interval = purge_interval_seconds
        self._next_purge_at = -math.inf
        self._purge_lock = threading.Lock()
        self._create_table()

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
        """Close pooled connections (shutdown)."""
        self._engine.dispose()

    def probe(self) -> None:
        """Write (and let expire) one claim, exactly as a hook would; raises what a hook would."""
        now = self._clock()
        self.claim(PROBE_ISSUER, f"{uuid.uuid4()}", now + 1.0)

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        _check_key_part("issuer", issuer, MAX_ISSUER_LENGTH)
        _check_key_part("jti", jti, MAX_JTI_LENGTH)
        expires_at = float(expires_at)
        if not math.isfinite(expires_at):
            raise ValueError("expires_at must be a finite number")

        now = self._clock()
        self._maybe_purge(now)

        table = jwt_replay_table
        try:
            with self._engine.begin() as conn:
                conn.execute(table.insert().values(iss=issuer, jti=jti, expires_at=expires_at))
        except IntegrityError:
            # Held already.  If the existing row has expired it is stale and may be reused; the
            # WHERE clause makes the takeover atomic (only one concurrent caller matches).
            with self._engine.begin() as conn:
                result = conn.execute(
                    table.update()
                    .where(
                        table.c.iss == issuer,
                        table.c.jti == jti,
                        table.c.expires_at <= now,
                    )
                    .values(expires_at=expires_at)
                )
                return result.rowcount == 1
        return True

    def purge_expired(self) -> int:
        """Delete every row whose ``expires_at`` has passed; return how many were deleted."""
        now = self._clock()
        with self._engine.begin() as conn:
            result = conn.execute(
                jwt_replay_table.delete().where(jwt_replay_table.c.expires_at <= now)
            )
        self._next_purge_at = now + self._purge_interval
        return result.rowcount

    def _maybe_purge(self, now: float) -> None:
        if now < self._next_purge_at:
            return
        # One purge per interval per instance; concurrent threads skip instead of queueing.
        if not self._purge_lock.acquire(blocking=False):
            return
        try:
            if now >= self._next_purge_at:
                self.purge_expired()
        finally:
            self._purge_lock.release()


def _check_key_part(name: str, value: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > max_length:
        raise ValueError(f"{name} is longer than {max_length} characters")
