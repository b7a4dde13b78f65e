"""Trusted JWK Sets, refreshed in the background so that a bad JWKS endpoint costs requests nothing.

One :class:`IssuerKeys` per trusted issuer holds the last good key set (``kid`` -> :class:`PyJWK`)
and one daemon thread that refreshes it:

* **periodically** (``refresh_seconds`` after the last success; ``retry_seconds`` after a failure),
  and **on demand** when a token names an unknown ``kid`` -- but never sooner than
  ``cooldown_seconds`` after the previous attempt, whatever asked for it, so a flood of random
  kids costs the issuer at most one fetch per cooldown;
* each fetch has a **hard total deadline** (connect, TLS, headers and body together): a watchdog
  shuts the socket down at the deadline, so a black-holed or dribbling endpoint cannot hold it
  longer; bodies over ``max_bytes`` are refused (a failed refresh);
* a failed refresh **keeps the last good key set**, which serves until it is ``max_stale_seconds``
  old; each failure is logged once (issuer and cause; there is no token here to leak);
* a well-formed JWK Set replaces the old one entirely, so a removed key is refused after the next
  successful refresh, and a new key is usable as soon as a refresh sees it.

Requests only read the key set under a short lock.  A request whose ``kid`` is known never waits;
one whose ``kid`` is unknown (or that finds no usable key set) waits at most ``wait_seconds`` for
a refresh that is in flight or that it has just triggered, never for the fetch's full deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
import urllib3
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKSetError
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["IssuerKeys", "JwksFetchError", "KeysUnavailable", "fetch_jwk_set", "parse_jwk_set"]

log = logging.getLogger(__name__)

_CHUNK = 16 * 1024
_HEADERS = {
    "Accept": "application/json, application/jwk-set+json",
    "Accept-Encoding": "identity",  # the size limit is on what the issuer sends, no zip bombs
    "Connection": "close",
    "User-Agent": "footdrop-cds",
}


class JwksFetchError(Exception):
    """A refresh failed; the message (for the log) says why."""


class KeysUnavailable(Exception):
    """No usable key for a ``kid``: ``reason`` is for the log (the caller answers 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- one fetch with a hard total deadline ----------------------------------------------------

_current = threading.local()


class _Watchdog:
    """Shuts down every socket of one fetch when it fires (from another thread).

    ``shutdown`` acts on the connection itself, so a duplicate of the socket's descriptor is kept
    (TLS wrapping detaches the original socket object); a recv blocked in the fetching thread
    then returns at once, whatever phase the fetch is in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False

    def watch(self, sock: socket.socket) -> None:
        try:
            dup = sock.dup()
        except OSError:
            return
        with self._lock:
            if not self.fired:
                self._sockets.append(dup)
                return
        _shut(dup)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def release(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class _Watched:
    """Mixin: hand each new socket to the current fetch's watchdog (closed at the deadline)."""

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        watchdog = getattr(_current, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(sock)
        return sock


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, Any] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter whose connections (direct or through an HTTP proxy) are watched."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> urllib3.ProxyManager:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if type(manager) is urllib3.ProxyManager:  # SOCKS managers keep their own classes
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def fetch_jwk_set(
    url: str,
    *,
    deadline_seconds: float,
    max_bytes: int,
    watchdog: _Watchdog | None = None,
) -> dict[str, PyJWK]:
    """GET ``url`` and parse it as a JWK Set, all within ``deadline_seconds``; no redirects.

    Raises :class:`JwksFetchError` on any failure: transport error, deadline, status other than
    200, a body over ``max_bytes``, or a body that is not a JWK Set.
    """
    watchdog = watchdog or _Watchdog()
    deadline = time.monotonic() + deadline_seconds
    timer = threading.Timer(deadline_seconds, watchdog.fire)
    timer.daemon = True
    session = requests.Session()
    adapter = _WatchedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    _current.watchdog = watchdog
    body = bytearray()
    try:
        timer.start()
        try:
            response = session.get(
                url,
                headers=_HEADERS,
                timeout=(deadline_seconds, deadline_seconds),
                stream=True,
                allow_redirects=False,
            )
            with response:
                if response.status_code != 200:
                    raise JwksFetchError(f"http {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise JwksFetchError(f"larger than {max_bytes} bytes (Content-Length)")
                for chunk in response.iter_content(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise JwksFetchError(f"larger than {max_bytes} bytes")
                    if time.monotonic() >= deadline:
                        break
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            # The socket timeouts equal the deadline, so on a busy machine either may fire first.
            timed_out = isinstance(error, _TIMEOUTS) or time.monotonic() >= deadline
            if watchdog.fired or timed_out:
                raise JwksFetchError(f"no complete answer within {deadline_seconds:g} s") from None
            raise JwksFetchError(f"connection failed ({type(error).__name__})") from None
        # A shutdown socket can look like a clean end of a body without Content-Length.
        if watchdog.fired or time.monotonic() >= deadline:
            raise JwksFetchError(f"no complete answer within {deadline_seconds:g} s")
    finally:
        timer.cancel()
        _current.watchdog = None
        watchdog.release()
        session.close()
    return parse_jwk_set(bytes(body))


_TIMEOUTS = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def parse_jwk_set(body: bytes) -> dict[str, PyJWK]:
    """The signing keys of a JWK Set by ``kid`` (first one wins); keys PyJWT cannot use, keys
    without ``kid`` and keys whose ``use`` is not ``sig`` are left out.

    A well-formed set with no usable key is an empty mapping (the issuer said "no keys");
    anything that is not a JWK Set raises :class:`JwksFetchError`.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksFetchError("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksFetchError("not a JWK Set (no 'keys' array)")
    entries = [entry for entry in data["keys"] if isinstance(entry, dict)]
    if not entries:
        return {}
    try:
        jwk_set = PyJWKSet(entries)
    except PyJWKSetError:
        return {}  # no usable key
    except Exception as error:  # a malformed member PyJWT does not expect
        raise JwksFetchError(f"unusable JWK Set ({type(error).__name__})") from None
    keys: dict[str, PyJWK] = {}
    for jwk in jwk_set.keys:
        kid = jwk.key_id
        if isinstance(kid, str) and kid and jwk.public_key_use in (None, "sig"):
            keys.setdefault(kid, jwk)
    return keys


# --- the key set of one issuer ---------------------------------------------------------------


@dataclass(frozen=True)
class RefreshPolicy:
    """Timings and limits of one issuer's key set (see :class:`~.jwt_auth.JwtPolicy`)."""

    deadline_seconds: float = 2.0
    refresh_seconds: float = 300.0
    cooldown_seconds: float = 10.0
    max_stale_seconds: float = 86400.0
    max_bytes: int = 256 * 1024
    wait_seconds: float = 1.0

    @property
    def retry_seconds(self) -> float:
        """After a failure: retry after the cooldown, but at least 1 s, at most the interval."""
        return min(self.refresh_seconds, max(self.cooldown_seconds, 1.0))


@dataclass(frozen=True)
class KeySetStatus:
    """What an issuer's key set looks like now (for tests, logs and health checks)."""

    kids: tuple[str, ...] | None  # None: no key set fetched yet
    age_seconds: float | None
    fetches: int
    failures: int
    last_failure: str | None
    usable: bool


class IssuerKeys:
    """The last good JWK Set of one issuer and the daemon thread that refreshes it.

    Thread-safe.  The thread starts on first use (also after a fork) and stops on :meth:`close`.
    """

    def __init__(
        self,
        iss: str,
        url: str,
        policy: RefreshPolicy,
        fetch: Callable[..., Mapping[str, PyJWK]] = fetch_jwk_set,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iss = iss
        self.url = url
        self._policy = policy
        self._fetch = fetch
        self._now = monotonic
        self._cond = threading.Condition(threading.Lock())
        self._keys: Mapping[str, PyJWK] | None = None
        self._fetched_at = -math.inf  # monotonic time of the last success
        self._last_attempt = -math.inf
        self._next_periodic = -math.inf  # the first refresh is due at once
        self._requested = False
        self._in_flight = False
        self._generation = 0  # completed attempts
        self._fetches = 0
        self._failures = 0
        self._last_failure: str | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._watchdog: _Watchdog | None = None

    # --- requests -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the refresher (and so the first fetch) now rather than on first use."""
        with self._cond:
            self._ensure_thread()

    def signing_key(self, kid: str) -> PyJWK:
        """The key for ``kid``, or :class:`KeysUnavailable`; waits at most ``wait_seconds``."""
        with self._cond:
            self._ensure_thread()
            key = self._lookup(kid)
            if key is not None:
                return key
            if self._ask_refresh() or self._in_flight:
                generation = self._generation
                until = self._now() + self._policy.wait_seconds
                while self._generation == generation and not self._closed:
                    left = until - self._now()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                key = self._lookup(kid)
                if key is not None:
                    return key
            raise KeysUnavailable(self._why_not())

    def status(self) -> KeySetStatus:
        with self._cond:
            now = self._now()
            return KeySetStatus(
                kids=None if self._keys is None else tuple(sorted(self._keys)),
                age_seconds=None if self._keys is None else now - self._fetched_at,
                fetches=self._fetches,
                failures=self._failures,
                last_failure=self._last_failure,
                usable=self._usable(now),
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop the refresher, aborting a fetch in flight; idempotent."""
        with self._cond:
            self._closed = True
            watchdog, thread = self._watchdog, self._thread
            self._cond.notify_all()
        if watchdog is not None:
            watchdog.fire()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- under the lock ---------------------------------------------------------------------

    def _usable(self, now: float) -> bool:
        return self._keys is not None and now - self._fetched_at <= self._policy.max_stale_seconds

    def _lookup(self, kid: str) -> PyJWK | None:
        if self._keys is None or not self._usable(self._now()):
            return None
        return self._keys.get(kid)

    def _ask_refresh(self) -> bool:
        """Ask the refresher for an early fetch; False when the cooldown forbids it."""
        if self._closed:
            return False
        if self._requested:
            return True
        if self._in_flight or self._now() < self._last_attempt + self._policy.cooldown_seconds:
            return False
        self._requested = True
        self._cond.notify_all()
        return True

    def _why_not(self) -> str:
        if self._keys is None:
            cause = self._last_failure or "no answer yet"
            return f"JWKS of the issuer unreachable or unusable, no keys yet ({cause})"
        if not self._usable(self._now()):
            return (
                "JWKS of the issuer unreachable: the last good key set is older than "
                f"{self._policy.max_stale_seconds:g} s ({self._last_failure})"
            )
        return "kid unknown or JWKS unusable"

    def _ensure_thread(self) -> None:
        if self._closed or (self._thread is not None and self._thread.is_alive()):
            return
        self._thread = threading.Thread(
            target=self._run, name=f"jwks-refresh {self.iss[:40]}", daemon=True
        )
        self._thread.start()

    def _due_at(self) -> float:
        due = self._next_periodic
        if self._requested:
            due = min(due, self._last_attempt + self._policy.cooldown_seconds)
        return due

    # --- the refresher ----------------------------------------------------------------------

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                wait = self._due_at() - self._now()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._requested = False
                self._in_flight = True
                self._last_attempt = self._now()
                watchdog = self._watchdog = _Watchdog()
                self._cond.release()
                try:
                    keys, failure = self._attempt(watchdog)
                finally:
                    self._cond.acquire()
                self._watchdog = None
                self._in_flight = False
                self._record(keys, failure)
                self._generation += 1
                self._cond.notify_all()

    def _attempt(self, watchdog: _Watchdog) -> tuple[Mapping[str, PyJWK] | None, str | None]:
        policy = self._policy
        try:
            keys = self._fetch(
                self.url,
                deadline_seconds=policy.deadline_seconds,
                max_bytes=policy.max_bytes,
                watchdog=watchdog,
            )
        except JwksFetchError as error:
            return None, str(error)
        except Exception as error:  # the refresher must outlive any surprise
            return None, f"unexpected {type(error).__name__}"
        return keys, None

    def _record(self, keys: Mapping[str, PyJWK] | None, failure: str | None) -> None:
        now = self._now()
        self._fetches += 1
        if keys is not None:
            recovered = self._last_failure is not None
            changed = self._keys is None or set(self._keys) != set(keys)
            self._keys, self._fetched_at = dict(keys), now
            self._last_failure = None
            self._next_periodic = now + self._policy.refresh_seconds
            if recovered or changed:
                log.info(
                    "JWKS refreshed",
                    extra={"event": "jwks", "issuer": self.iss, "count": len(keys)},
                )
            return
        self._failures += 1
        self._last_failure = failure
        self._next_periodic = now + self._policy.retry_seconds
        if self._closed:
            return
        if self._keys is None:
            serving = "no key set yet: tokens of this issuer are refused"
        elif self._usable(now):
            serving = f"the last good key set ({now - self._fetched_at:.0f} s old) keeps serving"
        else:
            serving = "the last good key set is too old: tokens of this issuer are refused"
        log.warning(
            f"JWKS refresh failed: {failure}; {serving}",
            extra={"event": "jwks", "issuer": self.iss, "reason": failure},
        )
