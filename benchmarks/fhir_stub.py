"""A loopback FHIR server stub that answers every query after a fixed delay (its own process).

``python -m benchmarks.fhir_stub ANSWERS.json DELAY_SECONDS`` serves ``GET /fhir/<Type>?...``
with the Bundle stored for ``<Type>`` (``GET /fhir/Patient/<id>`` with the Patient) and prints its
port on the first line of stdout. It stops when its stdin closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def serve(answers: dict[str, Any], delay: float) -> None:
    bodies = {rtype: json.dumps(doc).encode() for rtype, doc in answers.items()}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else headers and body meet a 40 ms delayed ACK

        def do_GET(self) -> None:
            time.sleep(delay)
            path = self.path.split("?", 1)[0]
            parts = [p for p in path.split("/") if p]
            body = bodies.get(parts[1]) if len(parts) >= 2 and parts[0] == "fhir" else None
            status = 200 if body is not None else 404
            body = body if body is not None else b'{"resourceType":"OperationOutcome"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 512
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_port, flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()
    server.server_close()


class FhirStub:
    """Run the stub as a child process; ``base_url`` is its FHIR base (``.../fhir``)."""

    def __init__(self, answers_file: Path, delay: float) -> None:
        self._command = [
            sys.executable,
            "-m",
            "benchmarks.fhir_stub",
            str(answers_file),
            str(delay),
        ]
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> FhirStub:
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self._process.stdout is not None
        port = int(self._process.stdout.readline())
        self.base_url = f"http://127.0.0.1:{port}/fhir"
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        process.stdout.close()


if __name__ == "__main__":
    serve(json.loads(Path(sys.argv[1]).read_text("utf-8")), float(sys.argv[2]))
