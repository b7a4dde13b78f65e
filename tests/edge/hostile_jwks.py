"""A JWKS server on loopback whose behaviour a test switches mid-run: it serves the published keys,
or black-holes (reads the request, never answers), dribbles (one byte every ``dribble_interval``
seconds), answers 500, or serves an oversized body.  It counts the requests it receives and stops
every connection it holds on :meth:`HostileJwks.stop`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

JWKS_PATH = "/.well-known/jwks.json"


class HostileJwks:
    """``mode`` is one of ``serve``, ``blackhole``, ``dribble``, ``error``, ``oversized``,
    ``oversized-chunked``."""

    def __init__(self, dribble_interval: float = 0.5, oversized_bytes: int = 1024 * 1024) -> None:
        self.keys: list[dict[str, Any]] = []
        self.mode = "serve"
        self.dribble_interval = dribble_interval
        self.oversized_bytes = oversized_bytes
        self._lock = threading.Lock()
        self._requests = 0
        self.stopping = threading.Event()
        #: Seconds each dribbled/black-holed connection was held before the client let go.
        self.held: list[float] = []
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> HostileJwks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{JWKS_PATH}"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def count(self) -> None:
        with self._lock:
            self._requests += 1

    def body(self) -> bytes:
        return json.dumps({"keys": self.keys}).encode()


def _handler_for(jwks: HostileJwks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            jwks.count()
            mode = jwks.mode
            if mode == "serve":
                self._send(200, jwks.body())
            elif mode == "error":
                self._send(500, b"oops")
            elif mode == "blackhole":
                started = time.monotonic()
                # Never answer; notice when the client gives up (its end of the socket closes).
                self.connection.settimeout(0.2)
                while not jwks.stopping.is_set():
                    try:
                        if self.connection.recv(1) == b"":
                            break
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                jwks.held.append(time.monotonic() - started)
                self.close_connection = True
            elif mode == "dribble":
                body = jwks.body()
                padded = body + b" " * 4096  # valid JSON, far longer than the dribble lasts
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(padded)))
                self.end_headers()
                self.wfile.flush()
                started = time.monotonic()
                try:
                    for byte in padded:
                        if jwks.stopping.wait(jwks.dribble_interval):
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:
                    pass
                jwks.held.append(time.monotonic() - started)
                self.close_connection = True
            elif mode == "oversized":
                pad = b" " * jwks.oversized_bytes
                self._send(200, jwks.body()[:-1] + b', "pad": "' + pad + b'"}')
            elif mode == "oversized-chunked":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                body = jwks.body()[:-1] + b', "pad": "' + b" " * jwks.oversized_bytes + b'"}'
                try:
                    for start in range(0, len(body), 8192):
                        part = body[start : start + 8192]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass
                self.close_connection = True

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

    return Handler
