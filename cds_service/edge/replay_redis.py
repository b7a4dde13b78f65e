"""The JWT replay store in Redis or Valkey (``CDS_REPLAY_URL=redis://…``), for clusters.

One command per claim: ``SET <key> 1 NX PXAT <expiry in ms>``: atomic set-if-absent with the
expiry attached, so every worker of every instance sharing the server sees one winner per
``(iss, jti)`` and the server forgets the pair when the token could no longer be accepted
anyway (nothing to purge).

Surviving restarts is the server's configuration: with ``appendonly yes`` (the AOF,
``appendfsync everysec`` by default) a restart or crash loses at most the last second of
claims; with persistence off (``--save ''`` and no AOF) a restart forgets every claim. The
README's "Replay store" section says so; ``/healthz`` probes with a real claim either way.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from .replay_guard import PROBE_ISSUER, checked_claim

__all__ = ["KEY_PREFIX", "RedisReplayGuard", "redis_key"]

#: Every key the service writes starts with this (one Redis may serve other applications).
KEY_PREFIX = "footdrop-cds:jti:"


def redis_key(issuer: str, jti: str) -> str:
    """The key for one pair: a digest, so that no issuer/jti pair can collide with another."""
    digest = hashlib.sha256(f"{len(issuer)}:{issuer}:{jti}".encode()).hexdigest()
    return KEY_PREFIX + digest


class RedisReplayGuard:
    """A :class:`~cds_service.edge.replay_guard.ReplayGuard` on a Redis or Valkey server.

    ``client`` is a ``redis.Redis`` (thread-safe: it keeps a connection pool); every wait on the
    server is bounded by the client's socket timeouts (see :func:`open_redis_guard`).
    """

    def __init__(self, client: Any, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock

    def claim(self, issuer: str, jti: str, expires_at: float) -> bool:
        expires_at = checked_claim(issuer, jti, expires_at)
        # PXAT is absolute: the pair expires when the token does, whatever the call's delay.
        # A pair already past its expiry is kept a moment rather than not at all.
        at_ms = max(math.ceil(expires_at * 1000), int(self._clock() * 1000) + 1000)
        return bool(self._client.set(redis_key(issuer, jti), b"1", nx=True, pxat=at_ms))

    def probe(self) -> None:
        """Write (and let expire) one claim, exactly as a hook would; raises what a hook would."""
        self.claim(PROBE_ISSUER, f"{uuid.uuid4()}", self._clock() + 1.0)

    def dispose(self) -> None:
        """Close the client's pooled connections (shutdown)."""
        self._client.close()


def open_redis_guard(url: str, wait_seconds: float) -> RedisReplayGuard:
    """A guard on the server at ``url``; ImportError names the extra to install."""
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ImportError(
            "the Redis driver is not installed: pip install 'footdrop-cds[redis]'"
        ) from None
    client = redis.Redis.from_url(
        url,
        socket_timeout=wait_seconds,
        socket_connect_timeout=wait_seconds,
        health_check_interval=30,
        # No silent retry: a SET NX retried after a lost answer would refuse its own token.
        retry=Retry(NoBackoff(), 0),
    )
    guard = RedisReplayGuard(client)
    guard.probe()  # an unreachable server or a wrong password is one line at start-up
    return guard
