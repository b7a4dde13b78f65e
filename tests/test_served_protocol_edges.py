"""Protocol edges as the production server (gunicorn, the shipped config) meets them.

Issue 11, low items: broken chunked framing was a 500 and a chunked body over the limit was cut at
the limit (then "malformed JSON") instead of 413; OPTIONS without CORS answered an empty text/html;
gunicorn's control socket lived in $HOME, one path shared by every instance on the host.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import FOOTDROP, ROOT
from tests.processes import stop_group, wait_until_healthy

pytestmark = pytest.mark.integration

LIMIT = 4096


class Served:
    def __init__(self, port: int, home: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.home = home


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """gunicorn with the shipped config, a small body limit and its own $HOME."""
    home = tmp_path_factory.mktemp("home")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        HOME=str(home),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
        CDS_MAX_BODY_BYTES=str(LIMIT),
        CDS_DATABASE_URL=f"sqlite:///{home / 'feedback.sqlite3'}",
    )
    command = [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf"]
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(
        [*command, "cds_service:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until_healthy(process, f"http://127.0.0.1:{port}/healthz")
        yield Served(port, home)
    finally:
        stop_group(process)
        log.close()


def _raw(served: Served, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` (already chunk-framed) with Transfer-Encoding: chunked; status and body."""
    head = (
        f"POST /cds-services/{FOOTDROP} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as connection:
        connection.sendall(head + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize(
    "framing",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n", b"-3\r\nabc\r\n0\r\n\r\n"],
    ids=["non-hex size", "chunk longer than its size", "negative size"],
)
def test_broken_chunked_framing_is_400_not_500(served: Served, framing: bytes) -> None:
    """A chunked body with broken framing is a 400 with a JSON reason, never a 500."""
    status, body = _raw(served, framing)
    assert status == 400, body
    assert b'"error"' in body


def test_chunked_body_over_the_limit_is_413(served: Served) -> None:
    """A chunked body larger than CDS_MAX_BODY_BYTES is refused with 413, not cut and misread."""
    big = b'{"hook": "' + b"x" * (2 * LIMIT) + b'"}'
    status, body = _raw(served, _chunk(big[:LIMIT]) + _chunk(big[LIMIT:]) + b"0\r\n\r\n")
    assert status == 413, body


def test_chunked_body_within_the_limit_is_read_whole(served: Served) -> None:
    """A valid chunked body under the limit reaches validation intact (400 names the schema)."""
    document = b'{"hook": "patient-view", "hookInstance": "not-a-uuid", "context": {}}'
    status, body = _raw(served, _chunk(document[:10]) + _chunk(document[10:]) + b"0\r\n\r\n")
    assert status == 400
    assert b"invalid request" in body


@pytest.mark.parametrize("path", ["/cds-services", f"/cds-services/{FOOTDROP}", "/healthz"])
def test_options_without_cors_is_204_with_allow(served: Served, path: str) -> None:
    """OPTIONS without an Origin answers 204 with Allow and no body (no empty text/html)."""
    response = requests.options(served.url + path, timeout=30)
    assert response.status_code == 204
    assert "OPTIONS" in response.headers["Allow"]
    assert response.content == b""
    assert "text/html" not in response.headers.get("Content-Type", "")


def test_no_control_socket_is_left_in_home(served: Served) -> None:
    """gunicorn's control socket is disabled: nothing shared appears under $HOME."""
    assert not (served.home / ".gunicorn").exists()
