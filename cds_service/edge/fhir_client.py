"""Fetching what the prefetch did not bring from the client's FHIR server (CDS Hooks 2.0 §4, §5).

Every query of one hook call runs in parallel on a thread pool owned by the client, within one
overall deadline, so the service can still answer "on the order of 500 ms". Server faults never
raise: each key the server could not deliver gets a short, stable reason in
``FetchResult.failures`` and the caller decides (use the rest, or answer 412):

    timeout              a request got no answer within policy.timeout_seconds
    deadline             the key was not done by policy.deadline_seconds
    connection error     refused, reset, DNS failure
    tls error            certificate or handshake failure
    http <status>        any status other than 200 (after same-origin redirects)
    not json             the body is not JSON (an HTML error page, say)
    truncated json       the body ends early
    too large            the body exceeds policy.max_body_bytes
    not a Bundle/resource  a search did not answer a Bundle, or a read not the resource asked for
    redirect loop        redirects repeat or exceed MAX_REDIRECTS
    foreign redirect     a redirect leaves the fhirServer's origin (not followed)
    foreign next link    a Bundle next link leaves the fhirServer's origin (not followed)
    next link loop       a next link points at a page already read
    page cap             more than policy.max_pages pages: the key would be incomplete, so none
                         of it is kept (a partial history could hide a red flag)
    bad query            the query is not relative to fhirServer
    bad fhirServer       fhirServer is not an http(s) URL
    insecure fhirServer  fhirServer is http:// on a non-loopback host and policy.allow_insecure
                         is off
    origin not allowed   the caller's issuer may not send us to this fhirServer
                         (policy.issuer_origins, enforced when auth is on)
    address not allowed  the host is, or resolves to, a loopback, private, link-local or other
                         non-global address outside policy.allowed_networks
    dns error            the host name does not resolve (within the deadline)
    origin busy          policy.max_per_origin queries to this origin are already in flight
    hook byte limit      the hook call read more than policy.max_bytes_per_call from FHIR
    bad response         not HTTP/1.x (bad status line, oversized headers)
    bad URL              a redirect Location or next link that is not a plain http(s) URL
                         (backslash, userinfo, control characters, whitespace, parser
                         disagreement)
    internal error       a bug; the class name goes to the log only

Every socket the call opens is registered; when the call's deadline passes, the caller shuts them
all down, so no server (dribbling headers, TLS handshake or body a byte at a time) can keep a pool
thread past the deadline. URLs are parsed once with urllib3's parser (the one that connects) and
refused if Python's ``urllib.parse`` reads the authority differently; the connection goes to the
address that was resolved and checked, never to a second DNS answer.

The bearer token goes only to the fhirServer's own origin (scheme, host, port): redirects are
followed by hand and only within it, next links are checked likewise, and neither the token nor
bodies nor URLs (they carry patient ids) are logged. These reasons are for the log and for tests:
the HTTP answer (412) says only "unavailable".
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any
from urllib.parse import urljoin, urlsplit

import certifi
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    LocationParseError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.exceptions import (
    SSLError as Urllib3SSLError,
)
from urllib3.exceptions import (
    TimeoutError as Urllib3TimeoutError,
)
from urllib3.util import parse_url

from cds_service import metrics

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchResult",
    "FhirClient",
    "Target",
    "is_loopback_host",
    "parse_base_url",
    "parse_url_strictly",
]

log = logging.getLogger("cds_service.fhir")

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_URL_LENGTH = 8192
_CHUNK = 64 * 1024
_ACCEPT = "application/fhir+json"
_USER_AGENT = "footdrop-cds"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REG_NAME = re.compile(r"[a-z0-9._-]+")
MIB = 1024 * 1024
# Bodies this large are parsed one at a time per process: json.loads holds the GIL anyway (no
# throughput is lost), and its transient memory (up to ~30x the body for adversarial JSON) is
# then paid once per process, not once per concurrent hook call.
LARGE_BODY_BYTES = 1 * MIB
_LARGE_PARSE = threading.Lock()


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one ``FhirClient.fetch`` call, and of the client as a whole."""

    timeout_seconds: float = 0.4  # per socket operation (connect, each read)
    deadline_seconds: float = 0.9  # overall, all keys, incl. pages: also every socket's life
    max_pages: int = 5  # Bundle next-link cap per query
    max_workers: int = 8
    allow_insecure: bool = False  # http:// allowed only on loopback unless True
    max_body_bytes: int = 4 * MIB  # per response (a page of _count=200 is far smaller)
    max_bytes_per_call: int = 10 * MIB  # all responses of one hook call together
    max_per_origin: int = 16  # queries in flight per FHIR origin, process-wide
    # Networks allowed although not global (loopback, private, link-local, ...), as CIDRs.
    allowed_networks: tuple[str, ...] = ()
    # Trusted issuer -> base URLs its calls may name as fhirServer; None: not enforced (auth off).
    issuer_origins: Mapping[str, Sequence[str]] | None = None
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        object.__setattr__(self, "_networks", networks)
        for bases in (self.issuer_origins or {}).values():
            for url in bases:
                if parse_base_url(url) is None:
                    raise ValueError(f"not a FHIR base URL: {url!r}")

    def address_allowed(self, address: str) -> bool:
        """Global unicast addresses, and anything inside ``allowed_networks``."""
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip.version == net.version and ip in net for net in self._networks):
            return True
        return ip.is_global and not ip.is_multicast


class FetchError(Exception):
    """One key could not be had; ``reason`` is one of the codes in the module docstring."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class FetchResult:
    """Resources per key fetched OK, and a reason per key that could not be had.

    ``failures`` holds the precise causes: for the log and for tests, never for the client.
    """

    resources: dict[str, list[dict[str, Any]]]
    failures: dict[str, str]
    requests_made: int


Origin = tuple[str, str, int]


@dataclass(frozen=True)
class Target:
    """A URL as the connection will use it: origin, and the request target (path and query)."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    request_uri: str
    path: str

    @property
    def origin(self) -> Origin:
        return self.scheme, self.host, self.port


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, brackets allowed) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_url_strictly(url: object) -> Target | None:
    """``url`` as urllib3 (which connects) reads it, or None if it is not a plain http(s) URL.

    Refused: non-ASCII, control characters, whitespace, backslashes, userinfo, percent signs or
    zone ids in the host, and any URL whose scheme, host or port urllib.parse reads differently
    (the classic ``http://evil\\@fhir-host/`` differential). Scheme and host compare in lower
    case; an explicit default port equals the implicit one; a trailing dot is another host.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isascii():
        return None
    if any(ch <= " " or ch in "\x7f\\" for ch in url):
        return None
    try:
        parsed = parse_url(url)
        other = urlsplit(url)
        other_port = other.port
    except (LocationParseError, ValueError):
        return None
    scheme = (parsed.scheme or "").lower()
    if scheme not in _DEFAULT_PORTS or other.scheme.lower() != scheme:
        return None
    if parsed.auth is not None or "@" in other.netloc or other.username is not None:
        return None
    host = (parsed.host or "").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            if ipaddress.ip_address(host).version != 6:
                return None
        except ValueError:
            return None
    elif not _REG_NAME.fullmatch(host):
        return None
    if host != (other.hostname or ""):
        return None
    default = _DEFAULT_PORTS[scheme]
    port = default if parsed.port is None else parsed.port
    if port != (default if other_port is None else other_port) or not 0 < port < 65536:
        return None
    return Target(scheme, host, port, parsed.request_uri or "/", parsed.path or "/")


def parse_base_url(url: object) -> Target | None:
    """A fhirServer: a strict http(s) URL with no query and no fragment (``?`` or ``#``)."""
    if not isinstance(url, str) or "?" in url or "#" in url:
        return None
    return _parse_base(url.rstrip("/"))


@functools.lru_cache(maxsize=256)
def _parse_base(url: str) -> Target | None:
    """Cached: every hook call parses its fhirServer and each allowed base (a pure function)."""
    return parse_url_strictly(url)


def _base_allowed(base: Target, allowed: Sequence[str]) -> bool:
    """``base`` is one of ``allowed`` or below one of them (same origin, path prefix)."""
    for url in allowed:
        entry = parse_base_url(url)
        if entry is None or entry.origin != base.origin:
            continue
        prefix = entry.path.rstrip("/")
        if base.path.rstrip("/") == prefix or base.path.startswith(prefix + "/"):
            return True
    return False


class _Call:
    """What the workers of one fetch share: where to, with what, until when; its sockets."""

    def __init__(
        self,
        base: str,
        target: Target,
        addresses: list[str],
        token: str | None,
        deadline: float,
        policy: FetchPolicy,
    ) -> None:
        self.base = base
        self.origin = target.origin
        self.host = target.host
        self.addresses = addresses
        self.headers = {
            "Accept": _ACCEPT,
            "Accept-Encoding": "identity",
            "User-Agent": _USER_AGENT,
            "Connection": "close",
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.deadline = deadline
        self.policy = policy
        self.stopped = threading.Event()
        self.hook_instance: str | None = None  # for log lines only
        self._lock = threading.Lock()
        self._requests = 0
        self._bytes = 0
        self._sockets: set[socket.socket] = set()

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    @property
    def requests_made(self) -> int:
        with self._lock:
            return self._requests

    def take_bytes(self, key: str, count: int) -> None:
        with self._lock:
            self._bytes += count
            if self._bytes > self.policy.max_bytes_per_call:
                raise FetchError(key, "hook byte limit")

    def remaining(self, key: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.stopped.is_set():
            raise FetchError(key, "deadline")
        return left

    def open_socket(
        self, key: str, port: int, timeout: float | None
    ) -> tuple[socket.socket, socket.socket]:
        """A TCP connection to a checked address of the host, watched until the call ends."""
        last: OSError | None = None
        for address in self.addresses:
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
            watch = sock.dup()  # the same connection: shutting it down wakes any reader
            with self._lock:
                if self.stopped.is_set():
                    sock.close()
                    watch.close()
                    raise FetchError(key, "deadline")
                self._sockets.add(watch)
            try:
                sock.settimeout(min(timeout or self.policy.timeout_seconds, self.remaining(key)))
                sock.connect((address, port))
                peer = sock.getpeername()[0]
                if ipaddress.ip_address(peer) != ipaddress.ip_address(address):
                    raise FetchError(key, "address not allowed")
                return sock, watch
            except OSError as error:
                last = error
                sock.close()
                self.forget(watch)
            except FetchError:
                sock.close()
                self.forget(watch)
                raise
        raise last or OSError("no address")

    def forget(self, watch: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(watch)
        watch.close()

    def abort(self) -> None:
        """Stop the call: shut down every socket still open, waking whoever reads it."""
        with self._lock:
            self.stopped.set()
            watches = list(self._sockets)
        for watch in watches:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(watch, socket.SHUT_RDWR)


class _Watched:
    """Mix-in: connect through ``_Call.open_socket`` (checked address, watched socket)."""

    _call: _Call
    _key: str
    port: int
    timeout: Any

    _watch: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        sock, self._watch = self._call.open_socket(self._key, self.port, timeout)
        return sock


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class FhirClient:
    """A thread-safe FHIR reader shared by all hook calls: one pool of workers, no shared sockets.

    Every request opens its own connection (``Connection: close``) to an address checked for this
    call, so no connection outlives the hook call that opened it.
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._executor = ThreadPoolExecutor(policy.max_workers, thread_name_prefix="fhir-fetch")
        self._busy: dict[Origin, int] = {}
        self._busy_lock = threading.Lock()
        self._tls = ssl.create_default_context(cafile=certifi.where())

    def close(self) -> None:
        """Stop the workers (without waiting for stragglers)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def in_flight(self, origin: Origin) -> int:
        """Queries to ``origin`` still holding a slot (for tests and metrics)."""
        with self._busy_lock:
            return self._busy.get(origin, 0)

    def fetch(
        self,
        fhir_server: str,
        access_token: str | None,
        queries: Mapping[str, str],
        *,
        issuer: str | None = None,
        hook_instance: str | None = None,
    ) -> FetchResult:
        """GET ``{fhir_server}/{query}`` for every key in parallel, within the policy's limits.

        ``issuer`` is the verified ``iss`` of the caller; with ``policy.issuer_origins`` set, the
        fhirServer must be one of that issuer's base URLs.
        """
        if not queries:
            return FetchResult({}, {}, 0)
        started = time.monotonic()
        deadline = started + self.policy.deadline_seconds
        target = parse_base_url(fhir_server)
        refusal = self._refusal(target, issuer)
        addresses: list[str] = []
        if target is not None and refusal is None:
            addresses, refusal = self._resolve(target, deadline)
        if target is None or refusal is not None:
            reason = refusal or "bad fhirServer"
            log.warning(
                "fhir fetch refused",
                extra={
                    "event": "fhir_fetch",
                    "hook_instance": hook_instance,
                    "keys": sorted(queries),
                    "reason": reason,
                },
            )
            for _ in queries:
                metrics.observe_fetch(reason, time.monotonic() - started)
            return FetchResult({}, dict.fromkeys(queries, reason), 0)
        base = fhir_server.rstrip("/")
        call = _Call(base, target, addresses, access_token, deadline, self.policy)
        call.hook_instance = hook_instance
        failures: dict[str, str] = {}
        futures: dict[Future[list[dict[str, Any]] | FetchError], str] = {}
        for key, query in queries.items():
            if not self._acquire(call.origin):
                failures[key] = "origin busy"
                metrics.observe_fetch("origin busy", 0.0)
                log.warning(
                    "fhir fetch failed",
                    extra={
                        "event": "fhir_fetch",
                        "hook_instance": hook_instance,
                        "key": key,
                        "reason": "origin busy",
                    },
                )
                continue
            future = self._executor.submit(self._fetch_key, call, key, query)
            future.add_done_callback(self._releaser(call.origin))
            futures[future] = key
        done, late = wait(futures, timeout=max(0.0, call.deadline - time.monotonic()))
        call.abort()
        resources: dict[str, list[dict[str, Any]]] = {}
        for future in late:
            future.cancel()
            failures[futures[future]] = "deadline"
            metrics.observe_fetch("deadline", time.monotonic() - started)
            log.warning(
                "fhir fetch failed",
                extra={
                    "event": "fhir_fetch",
                    "hook_instance": hook_instance,
                    "key": futures[future],
                    "reason": "deadline",
                    "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        for future in done:
            outcome = "deadline" if future.cancelled() else future.result()
            if isinstance(outcome, list):
                resources[futures[future]] = outcome
            else:
                failures[futures[future]] = outcome if isinstance(outcome, str) else outcome.reason
        return FetchResult(resources, failures, call.requests_made)

    def _refusal(self, target: Target | None, issuer: str | None) -> str | None:
        """Why the fhirServer may not be used at all (before any connection), or None."""
        if target is None:
            return "bad fhirServer"
        if target.scheme != "https" and not (
            self.policy.allow_insecure or is_loopback_host(target.host)
        ):
            return "insecure fhirServer"
        if self.policy.issuer_origins is not None:
            allowed = self.policy.issuer_origins.get(issuer or "", ())
            if not _base_allowed(target, allowed):
                return "origin not allowed"
        return None

    def _resolve(self, target: Target, deadline: float) -> tuple[list[str], str | None]:
        """The host's addresses, all of them allowed, resolved once for the whole call."""
        try:
            addresses = [str(ipaddress.ip_address(target.host))]
        except ValueError:
            lookup = self._executor.submit(
                socket.getaddrinfo, target.host.rstrip("."), target.port, 0, socket.SOCK_STREAM
            )
            try:
                infos = lookup.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                lookup.cancel()
                return [], "deadline"
            except (OSError, UnicodeError):
                return [], "dns error"
            addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
        if not addresses:
            return [], "dns error"
        if not all(self.policy.address_allowed(address) for address in addresses):
            return [], "address not allowed"
        return addresses, None

    def _acquire(self, origin: Origin) -> bool:
        with self._busy_lock:
            held = self._busy.get(origin, 0)
            if held >= self.policy.max_per_origin:
                return False
            self._busy[origin] = held + 1
            return True

    def _releaser(self, origin: Origin) -> Callable[[Future[Any]], None]:
        return lambda _future: self._release(origin)

    def _release(self, origin: Origin) -> None:
        with self._busy_lock:
            held = self._busy.get(origin, 0) - 1
            if held > 0:
                self._busy[origin] = held
            else:
                self._busy.pop(origin, None)

    def _fetch_key(self, call: _Call, key: str, query: str) -> list[dict[str, Any]] | FetchError:
        """All pages of one query, or the FetchError saying why not; never raises."""
        started = time.monotonic()
        status: int | None = None
        pages = 0
        try:
            if query.startswith("/") or "://" in query.split("?", 1)[0] or not query.strip():
                raise FetchError(key, "bad query")
            url = f"{call.base}/{query}"
            expected = _expected_resource(query)
            found: list[dict[str, Any]] = []
            seen = {url}
            while True:
                status, next_url = self._get_page(call, key, url, expected, found)
                pages += 1
                if next_url is None:
                    break
                next_url = _same_origin(call, key, url, next_url, "foreign next link")
                if next_url in seen:
                    raise FetchError(key, "next link loop")
                if pages >= self.policy.max_pages:
                    raise FetchError(key, "page cap")
                seen.add(next_url)
                url = next_url
        except FetchError as error:
            outcome: list[dict[str, Any]] | FetchError = error
        except Exception as error:  # a bug or an exotic transport fault must not escape a worker
            log.error(
                "fhir fetch internal error",
                extra={
                    "event": "fhir_fetch",
                    "hook_instance": call.hook_instance,
                    "key": key,
                    "error_class": type(error).__name__,
                },
            )
            outcome = FetchError(key, "internal error")
        else:
            outcome = found
        if isinstance(outcome, FetchError) and call.stopped.is_set():
            outcome = FetchError(key, "deadline")
        elapsed = time.monotonic() - started
        fields: dict[str, Any] = {
            "event": "fhir_fetch",
            "hook_instance": call.hook_instance,
            "key": key,
            "status": status,
            "pages": pages,
            "elapsed_ms": round(elapsed * 1000, 1),
        }
        if isinstance(outcome, FetchError):
            metrics.observe_fetch(outcome.reason, elapsed)
            log.warning("fhir fetch failed", extra={**fields, "reason": outcome.reason})
        else:
            metrics.observe_fetch(None, elapsed)
            log.info("fhir fetch", extra={**fields, "count": len(outcome)})
        return outcome

    def _get_page(
        self,
        call: _Call,
        key: str,
        url: str,
        expected: tuple[str, str] | None,
        found: list[dict[str, Any]],
    ) -> tuple[int, str | None]:
        """GET ``url`` following same-origin redirects by hand; add the 200 body's resources to
        ``found``; the status and the next-page link."""
        visited = {url}
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._get(call, key, url)
            if location is None:
                if status != 200:
                    raise FetchError(key, f"http {status}")
                if len(body) <= LARGE_BODY_BYTES:
                    return status, _collect(key, expected, _parse_json(key, body), found)
                if not _LARGE_PARSE.acquire(timeout=call.remaining(key)):
                    raise FetchError(key, "deadline")
                try:  # the parsed document is dropped before the next large parse starts
                    call.remaining(key)
                    return status, _collect(key, expected, _parse_json(key, body), found)
                finally:
                    _LARGE_PARSE.release()
            url = _same_origin(call, key, url, location, "foreign redirect")
            if url in visited:
                raise FetchError(key, "redirect loop")
            visited.add(url)
        raise FetchError(key, "redirect loop")

    def _get(self, call: _Call, key: str, url: str) -> tuple[int, str | None, bytearray]:
        """One request on its own connection: status, redirect target, the body within limits."""
        target = parse_url_strictly(url)
        if target is None or target.origin != call.origin:
            raise FetchError(key, "bad URL")
        left = call.remaining(key)
        timeout = min(self.policy.timeout_seconds, left)
        connection: HTTPConnection
        if target.scheme == "https":
            connection = _WatchedHTTPSConnection(
                call.host, target.port, timeout=timeout, ssl_context=self._tls
            )
        else:
            connection = _WatchedHTTPConnection(call.host, target.port, timeout=timeout)
        connection._call = call
        connection._key = key
        call.count_request()
        reading = False
        response = None
        try:
            connection.connect()
            connection.request(
                "GET", target.request_uri, headers=call.headers, preload_content=False
            )
            response = connection.getresponse()
            location = response.headers.get("Location")
            if response.status in REDIRECT_STATUSES and location:
                return response.status, location, bytearray()
            if response.status != 200:
                return response.status, None, bytearray()
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.policy.max_body_bytes:
                raise FetchError(key, "too large")
            reading = True
            body = bytearray()
            while True:
                call.remaining(key)
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                call.take_bytes(key, len(chunk))
                body += chunk
                if len(body) > self.policy.max_body_bytes:
                    raise FetchError(key, "too large")
            call.remaining(key)
            return response.status, None, body
        except FetchError:
            raise
        except (ReadTimeoutError, Urllib3TimeoutError, TimeoutError) as error:
            cut = left < self.policy.timeout_seconds  # the deadline, not the server, set the limit
            raise FetchError(key, "deadline" if cut else "timeout") from error
        except (ssl.SSLError, ssl.CertificateError, Urllib3SSLError) as error:
            raise FetchError(key, "tls error") from error
        except (ProtocolError, HTTPException) as error:
            raise FetchError(key, "truncated json" if reading else "bad response") from error
        except OSError as error:
            raise FetchError(key, "truncated json" if reading else "connection error") from error
        finally:
            if response is not None:
                response.close()
            connection.close()
            watch = getattr(connection, "_watch", None)
            if watch is not None:
                call.forget(watch)


def _same_origin(call: _Call, key: str, url: str, link: str, foreign: str) -> str:
    """``link`` resolved against ``url``, if it is a plain URL on the call's origin."""
    if (
        not isinstance(link, str)
        or not link.isascii()
        or any(ch <= " " or ch in "\x7f\\" for ch in link)
    ):
        raise FetchError(key, "bad URL")
    absolute = urljoin(url, link)
    target = parse_url_strictly(absolute)
    if target is None:
        raise FetchError(key, "bad URL")
    if target.origin != call.origin:
        raise FetchError(key, foreign)
    return absolute


def _expected_resource(query: str) -> tuple[str, str] | None:
    """(type, id) a read or vread must answer, or None for a search (which must answer a Bundle)."""
    segments = query.partition("?")[0].split("/")
    is_read = len(segments) == 2 or (len(segments) == 4 and segments[2] == "_history")
    if is_read and segments[1] and segments[1][0] not in "_$":
        return segments[0], segments[1]
    return None


def _parse_json(key: str, body: bytes | bytearray) -> Any:
    try:
        return json.loads(body)
    except RecursionError as error:
        raise FetchError(key, "not json") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        text = body.strip()
        ended_early = (
            isinstance(error, json.JSONDecodeError)
            and text[:1] in (b"{", b"[")
            and error.pos >= len(error.doc.rstrip())
        )
        raise FetchError(key, "truncated json" if ended_early else "not json") from error


def _collect(
    key: str, expected: tuple[str, str] | None, body: Any, found: list[dict[str, Any]]
) -> str | None:
    """Add one answer's resources to ``found``; the next-page link of a Bundle, if any."""
    if not isinstance(body, dict):
        raise FetchError(key, "not a Bundle/resource")
    if expected is not None:
        if (body.get("resourceType"), body.get("id")) != expected:
            raise FetchError(key, "not a Bundle/resource")
        found.append(body)
        return None
    if body.get("resourceType") != "Bundle":
        raise FetchError(key, "not a Bundle/resource")
    for entry in body.get("entry") or ():
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            found.append(resource)
    for link in body.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None
