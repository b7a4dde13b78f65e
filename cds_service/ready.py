"""The one line ``cds-service serve`` ends its start-up with: where to click next.

Printed once, after the service answers ``/healthz`` through the address people use, so a link
in it never leads to "connection refused".
"""

from __future__ import annotations

import http.client
import ipaddress
import threading
import time
from collections.abc import Callable

#: How often the announcer asks, and for how long at most (the workers boot within seconds).
POLL_SECONDS = 0.1
READY_DEADLINE_SECONDS = 120.0


def browsable_base(host: str, port: int) -> str:
    """``http://host:port`` for a browser: a wildcard bind becomes loopback, IPv6 in brackets."""
    name = host.strip("[]") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return f"http://{name}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def ready_line(base: str, *, landing_page: bool) -> str:
    """What to open next: the card preview in development, discovery always."""
    if landing_page:
        return (
            f"footdrop-cds ready: open {base}/ (card preview), "
            f"discovery at {base}/cds-services, API docs at {base}/docs"
        )
    return f"footdrop-cds ready on {base}: discovery at {base}/cds-services"


def answers(base: str, timeout: float = 2.0) -> bool:
    """Whether ``GET /healthz`` gets any HTTP answer (503 counts: the service is up to say so)."""
    host, _, port = base.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class Announcer:
    """A daemon thread that prints ``line`` once ``base`` answers, unless stopped first."""

    def __init__(self, base: str, line: str, emit: Callable[[str], None]) -> None:
        self.base = base
        self.line = line
        self._emit = emit
        self._stopped = threading.Event()
        self.announced = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ready-announcer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_SECONDS
        while not self._stopped.is_set() and time.monotonic() < deadline:
            if answers(self.base):
                if not self._stopped.is_set():
                    self._emit(self.line)
                    self.announced.set()
                return
            self._stopped.wait(POLL_SECONDS)
