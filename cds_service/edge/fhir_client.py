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

The bearer token goes only to the fhirServer's own origin (scheme, host, port): redirects are
followed by hand and only within it, next links are checked likewise, and neither the token nor
bodies nor URLs (they carry patient ids) are logged.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError

__all__ = ["FetchError", "FetchPolicy", "FetchResult", "FhirClient", "is_loopback_host"]

log = logging.getLogger("cds_service.fhir")

MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_ACCEPT = "application/fhir+json"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one ``FhirClient.fetch`` call."""

    timeout_seconds: float = 0.4  # per HTTP request (connect, and each read)
    deadline_seconds: float = 0.9  # overall, all keys, incl. pages
    max_pages: int = 5  # Bundle next-link cap per query
    max_workers: int = 8
    allow_insecure: bool = False  # http:// allowed only on loopback unless True
    max_body_bytes: int = 32 * 1024 * 1024  # per response


class FetchError(Exception):
    """One key could not be had; ``reason`` is one of the codes in the module docstring."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class FetchResult:
    """Resources per key fetched OK, and a reason per key that could not be had."""

    resources: dict[str, list[dict[str, Any]]]
    failures: dict[str, str]
    requests_made: int


Origin = tuple[str, str, int]


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an IP literal, brackets allowed) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> Origin | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


class _Call:
    """State shared by the workers of one fetch: where to, with what, until when."""

    def __init__(self, base: str, origin: Origin, token: str | None, deadline: float) -> None:
        self.base = base
        self.origin = origin
        self.headers = {"Accept": _ACCEPT}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.deadline = deadline
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._requests = 0

    def count_request(self) -> None:
        with self._lock:
            self._requests += 1

    @property
    def requests_made(self) -> int:
        with self._lock:
            return self._requests

    def remaining(self, key: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0 or self.stopped.is_set():
            raise FetchError(key, "deadline")
        return left


class FhirClient:
    """A pooled, thread-safe FHIR reader shared by all hook calls.

    ``session`` is for tests and special deployments; the client's own session keeps no cookies
    (one hook's FHIR session must not ride along with the next hook's token) and ignores proxy and
    .netrc settings from the environment.
    """

    def __init__(self, policy: FetchPolicy, session: requests.Session | None = None) -> None:
        self.policy = policy
        self._owns_session = session is None
        self._session = session or _make_session(policy.max_workers)
        self._executor = ThreadPoolExecutor(policy.max_workers, thread_name_prefix="fhir-fetch")

    def close(self) -> None:
        """Stop the workers (without waiting for stragglers) and close the own session."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def fetch(
        self, fhir_server: str, access_token: str | None, queries: Mapping[str, str]
    ) -> FetchResult:
        """GET ``{fhir_server}/{query}`` for every key in parallel, within the policy's limits."""
        if not queries:
            return FetchResult({}, {}, 0)
        started = time.monotonic()
        base = fhir_server.rstrip("/")
        origin = _origin(base)
        refusal = _refusal(origin, self.policy.allow_insecure)
        if origin is None or refusal:
            log.warning("fhir fetch refused (%d keys): %s", len(queries), refusal)
            return FetchResult({}, dict.fromkeys(queries, refusal or ""), 0)
        call = _Call(base, origin, access_token, started + self.policy.deadline_seconds)
        submit = self._executor.submit
        futures = {submit(self._fetch_key, call, key, query): key for key, query in queries.items()}
        done, late = wait(futures, timeout=max(0.0, call.deadline - time.monotonic()))
        call.stopped.set()
        resources: dict[str, list[dict[str, Any]]] = {}
        failures: dict[str, str] = {}
        for future in late:
            future.cancel()
            failures[futures[future]] = "deadline"
            log.warning("fhir fetch key=%s failed: deadline", futures[future])
        for future in done:
            outcome = "deadline" if future.cancelled() else future.result()
            if isinstance(outcome, list):
                resources[futures[future]] = outcome
            else:
                failures[futures[future]] = outcome if isinstance(outcome, str) else outcome.reason
        return FetchResult(resources, failures, call.requests_made)

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
                status, body = self._get_json(call, key, url)
                pages += 1
                next_url = _collect(key, expected, body, found)
                if next_url is None:
                    break
                next_url = urljoin(url, next_url)
                if _origin(next_url) != call.origin:
                    raise FetchError(key, "foreign next link")
                if next_url in seen:
                    raise FetchError(key, "next link loop")
                if pages >= self.policy.max_pages:
                    raise FetchError(key, "page cap")
                seen.add(next_url)
                url = next_url
        except FetchError as error:
            outcome: list[dict[str, Any]] | FetchError = error
        except Exception as error:  # a bug or an exotic transport fault must not escape a worker
            outcome = FetchError(key, f"error {type(error).__name__}")
        else:
            outcome = found
        elapsed_ms = (time.monotonic() - started) * 1000
        if isinstance(outcome, FetchError):
            log.warning(
                "fhir fetch key=%s failed: %s pages=%d elapsed_ms=%.0f",
                key,
                outcome.reason,
                pages,
                elapsed_ms,
            )
        else:
            log.info(
                "fhir fetch key=%s status=%s pages=%d count=%d elapsed_ms=%.0f",
                key,
                status,
                pages,
                len(outcome),
                elapsed_ms,
            )
        return outcome

    def _get_json(self, call: _Call, key: str, url: str) -> tuple[int, Any]:
        """GET ``url`` following same-origin redirects by hand; the parsed 200 body."""
        visited = {url}
        for _ in range(MAX_REDIRECTS + 1):
            status, location, body = self._get(call, key, url)
            if location is None:
                if status != 200:
                    raise FetchError(key, f"http {status}")
                return status, _parse_json(key, body)
            url = urljoin(url, location)
            if _origin(url) != call.origin:
                raise FetchError(key, "foreign redirect")
            if url in visited:
                raise FetchError(key, "redirect loop")
            visited.add(url)
        raise FetchError(key, "redirect loop")

    def _get(self, call: _Call, key: str, url: str) -> tuple[int, str | None, bytes]:
        """One request: status, redirect target (if it is one) and the body read within limits."""
        left = call.remaining(key)
        timeout = min(self.policy.timeout_seconds, left)
        # A timeout cut short to what is left of the deadline is the deadline passing, whichever
        # thread notices first: the reason must not depend on a race with ``fetch``'s own wait.
        timed_out = "deadline" if left < self.policy.timeout_seconds else "timeout"
        call.count_request()
        try:
            with self._session.get(
                url, headers=call.headers, timeout=timeout, stream=True, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUSES and location:
                    return response.status_code, location, b""
                if response.status_code != 200:
                    return response.status_code, None, b""
                body = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    body += chunk
                    if len(body) > self.policy.max_body_bytes:
                        raise FetchError(key, "too large")
                    call.remaining(key)
                return response.status_code, None, bytes(body)
        except requests.Timeout as error:
            raise FetchError(key, timed_out) from error
        except requests.exceptions.ChunkedEncodingError as error:
            raise FetchError(key, "truncated json") from error
        except requests.exceptions.SSLError as error:
            raise FetchError(key, "tls error") from error
        except requests.ConnectionError as error:
            # requests reports a read timeout in the middle of a streamed body as a ConnectionError
            read_timeout = bool(error.args) and isinstance(error.args[0], ReadTimeoutError)
            raise FetchError(key, timed_out if read_timeout else "connection error") from error


def _refusal(origin: Origin | None, allow_insecure: bool) -> str | None:
    if origin is None:
        return "bad fhirServer"
    scheme, host, _ = origin
    if scheme != "https" and not (allow_insecure or is_loopback_host(host)):
        return "insecure fhirServer"
    return None


def _make_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _expected_resource(query: str) -> tuple[str, str] | None:
    """(type, id) a read or vread must answer, or None for a search (which must answer a Bundle)."""
    segments = query.partition("?")[0].split("/")
    is_read = len(segments) == 2 or (len(segments) == 4 and segments[2] == "_history")
    if is_read and segments[1] and segments[1][0] not in "_$":
        return segments[0], segments[1]
    return None


def _parse_json(key: str, body: bytes) -> Any:
    try:
        return json.loads(body)
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
