"""Slow clients (issue 11, severe 2): `cds-service serve` puts nginx in front of gunicorn.

Without it, a few dozen connections sending one byte every 2 s held every gthread worker thread and
the service, `/healthz` included, stopped answering. Here 1,000 such connections (half trickling
headers, half a declared body) run against nginx + gunicorn (2 workers) on loopback while normal
requests are measured; nginx also cuts a stalled body and answers an oversized one itself, so
neither ever reaches gunicorn. `python -m benchmarks.slow_clients` shows the same attack with
`CDS_PROXY=off` for comparison (the figures are in the README).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.slow_clients import Served, attack, raise_open_files_limit
from tests.integration.serve_support import require_nginx

pytestmark = pytest.mark.integration

SLOW = 1000
# The allowance: p99 during the attack at most three times the p99 before it, or the p99 before
# plus 250 ms, whichever is larger. Before the attack the p99 of these requests is 2-10 ms on a
# 2-core machine; on a busy one (load 9-10: other suites, a CPU burner) the test's own 1,000
# slow-client sockets and the scheduler add 40-100 ms to the p99 of 200 samples whether or not the
# proxy is there. Without the proxy the p99 is the client's timeout (5 s): nothing answers at all,
# so the allowance stays far below the failure it guards against.
ABSOLUTE_ALLOWANCE = 0.250


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Served]:
    require_nginx()
    with Served({"CDS_PROXY": "nginx"}, tmp_path / "serve.log", tmp_path) as server:
        yield server


def test_a_thousand_slow_connections_do_not_delay_other_clients(service: Served) -> None:
    """1,000 connections at 1 byte / 2 s: /healthz always answers, p99 within the allowance."""
    if raise_open_files_limit() < SLOW + 256:
        pytest.skip(f"RLIMIT_NOFILE too low for {SLOW} connections")
    before, during, clients, open_min = attack(service.port, SLOW, count=200, timeout=5.0)
    figures = (
        f"p99 before {before.p99 * 1000:.1f} ms, during {during.p99 * 1000:.1f} ms; "
        f"{clients.opened} slow connections opened, at least {open_min} open while measuring, "
        f"{clients.cut} cut and reopened, {clients.connect_failures} refused"
    )
    assert before.failures == 0, figures
    assert open_min >= SLOW * 0.95, figures  # the attack really was on while measuring
    assert clients.connect_failures == 0, figures
    assert during.healthz_failures == 0 and during.failures == 0, figures
    assert len(during.answers) == 200, figures
    allowed = max(3 * before.p99, before.p99 + ABSOLUTE_ALLOWANCE)
    assert during.p99 <= allowed, f"{figures}; allowed {allowed * 1000:.1f} ms"
    assert "Traceback" not in service.tail(100_000)


def _exchange(port: int, data: bytes, pause_after: float = 0.0, then: bytes = b"") -> bytes:
    """Send ``data``, wait, send ``then``; everything the server sends until it closes (30 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        if pause_after:
            time.sleep(pause_after)
            try:
                sock.sendall(then)
            except OSError:
                return b""
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return received
            if not chunk:
                return received
            received += chunk


@pytest.fixture
def short_timeout_service(tmp_path: Path) -> Iterator[Served]:
    require_nginx()
    settings = {
        "CDS_PROXY": "nginx",
        "CDS_CLIENT_TIMEOUT_SECONDS": "2",
        "CDS_MAX_BODY_BYTES": "4096",
    }
    with Served(settings, tmp_path / "serve.log", tmp_path) as server:
        yield server


def test_a_stalled_body_is_cut_by_nginx_and_never_reaches_gunicorn(
    short_timeout_service: Served,
) -> None:
    """A body stalled longer than CDS_CLIENT_TIMEOUT_SECONDS: cut; gunicorn never sees it."""
    service = short_timeout_service
    head = (
        b"POST /cds-services/stalled-body-probe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    started = time.monotonic()
    answer = _exchange(service.port, head, pause_after=5.0, then=b"}" * 99)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 30
    time.sleep(0.5)
    assert _handled(service, 404) == 0  # gunicorn never saw it
    # The same request sent in full reaches the app (404: no such service) and is logged.
    whole = _exchange(service.port, head + b'"a": 1' + b" " * 93 + b"}")
    assert whole.startswith(b"HTTP/1.1 404"), whole[:200]
    deadline = time.monotonic() + 10
    while _handled(service, 404) == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _handled(service, 404) == 1


def _handled(service: Served, status: int) -> int:
    """Requests the app logged with this status."""
    return sum(
        1
        for line in service.tail(1_000_000).splitlines()
        if '"msg":"handled"' in line and f'"status":{status},' in line
    )


def test_headers_trickling_past_the_timeout_are_cut(short_timeout_service: Served) -> None:
    """Headers are bounded in total: one byte every 0.5 s is cut after the 2 s timeout."""
    service = short_timeout_service
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        cut = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"1" * 60:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            time.sleep(0.5)
    assert cut, "nginx kept reading headers for 30 s"
    assert time.monotonic() - started < 15


def test_an_oversized_body_is_413_json_from_nginx(short_timeout_service: Served) -> None:
    """Content-Length over CDS_MAX_BODY_BYTES: 413 as JSON before the body is sent."""
    service = short_timeout_service
    head = (
        b"POST /cds-services/footdrop-im-injection HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 4097\r\n\r\n"
    )
    answer = _exchange(service.port, head)
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"content-type: application/json" in status.lower()
    assert json.loads(body) == {"error": "request body too large"}
    # A chunked body over the limit is 413 as well, not truncated.
    chunk = b"a" * 5000
    chunked = (
        b"POST /cds-services/footdrop-im-injection HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(chunk):x}\r\n".encode()
        + chunk
        + b"\r\n0\r\n\r\n"
    )
    assert _exchange(service.port, chunked).startswith(b"HTTP/1.1 413")
    time.sleep(0.5)
    assert _handled(service, 413) == 0  # the app never saw either
