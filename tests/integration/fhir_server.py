"""A real FHIR R4 server on loopback for end-to-end tests: SEKMET (PyPI ``sekmet-fhir``).

SEKMET is a FastAPI/uvicorn FHIR R4 server on SQLite with real search (reference, token, date
params, ``_count``/``_offset`` paging with absolute next links), transactions and bearer-token
auth. It is started as a subprocess, equivalent to::

    cd <tmp> && python -m sekmet.cli serve -c <tmp>/settings.yaml

with a settings file that binds it to 127.0.0.1 on a free port, keeps its database in the
temporary directory, turns the hospital order simulator off (it would otherwise answer orders
with new resources on its own), stops request logging, accepts only a static bearer token, and
validates inbound resources leniently ("warn") so test data is stored as written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from tests.processes import free_port

FHIR_JSON = "application/fhir+json"
#: Generous on purpose: imports and the first request take seconds on a busy machine.
STARTUP_SECONDS = 60.0
STOP_SECONDS = 10.0


class FhirServerError(RuntimeError):
    """The test FHIR server did not start, or refused what it was given."""


class SekmetServer:
    """A running SEKMET FHIR server: ``base_url``, ``token``, ``seed()`` and ``reset()``."""

    def __init__(
        self, workdir: Path, token: str = "integration-test-token", *, open_access: bool = False
    ) -> None:
        self.workdir = workdir
        self.token = token
        #: No authentication at all, like the open servers the CDS Hooks sandbox uses.
        self.open_access = open_access
        self.port = 0
        self.base_url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._seeded: dict[tuple[str, str], None] = {}
        self._http = requests.Session()
        self._http.trust_env = False
        self._http.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        )

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start on a free loopback port and wait until /metadata answers."""
        last_error: FhirServerError | None = None
        for _ in range(3):  # a free port can be taken between probing and binding it
            self.port = free_port()
            self.base_url = f"http://127.0.0.1:{self.port}/fhir"
            self._process = self._spawn()
            try:
                self._wait_ready()
                return
            except FhirServerError as error:
                last_error = error
                self.stop()
            except BaseException:
                self.stop()
                raise
        raise last_error or FhirServerError("SEKMET did not start")

    def stop(self) -> None:
        """Terminate the server's process group (killed if it does not exit within STOP_SECONDS)
        and reap it; a no-op when not running."""
        process, self._process = self._process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the server leads its own process group
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            process.wait(timeout=STOP_SECONDS)
        _signal_group(group, signal.SIGKILL)  # anything it started and left behind

    def close(self) -> None:
        self.stop()
        self._http.close()

    # --- data -----------------------------------------------------------------------------

    def seed(self, resources: list[dict[str, Any]]) -> None:
        """Store resources with their own ids (one transaction of PUTs; all or nothing)."""
        if not resources:
            return
        entries = []
        for resource in resources:
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if not rtype or not rid:
                raise ValueError("seeded resources need resourceType and id")
            entries.append(
                {"resource": resource, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
            )
        self._transaction(entries)
        self._seeded.update(dict.fromkeys((r["resourceType"], r["id"]) for r in resources))

    def reset(self) -> None:
        """Delete every resource seeded so far (searches no longer find them)."""
        if not self._seeded:
            return
        entries = [
            {"request": {"method": "DELETE", "url": f"{rtype}/{rid}"}}
            for rtype, rid in self._seeded
        ]
        self._transaction(entries)
        self._seeded.clear()

    def get(self, query: str) -> dict[str, Any]:
        """GET ``{base_url}/{query}`` with the token; the JSON body (for checks in tests)."""
        response = self._http.get(f"{self.base_url}/{query}", timeout=10)
        response.raise_for_status()
        return response.json()

    # --- internals ------------------------------------------------------------------------

    def _transaction(self, entries: list[dict[str, Any]]) -> None:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        response = self._http.post(self.base_url, data=json.dumps(bundle), timeout=30)
        if response.status_code != 200:
            raise FhirServerError(f"transaction failed: {response.status_code} {response.text}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        data = self.workdir / f"data-{self.port}"
        data.mkdir(parents=True, exist_ok=True)
        settings = {
            "host": "127.0.0.1",
            "port": self.port,
            "base_url": self.base_url,
            "data_dir": str(data),
            "own_private_key_path": str(self.workdir / "keys" / "sekmet_private.pem"),
            "log_inbound": False,
            "simulator": {"enabled": False},
            "server_auth": (
                {"types": ["none"]}
                if self.open_access
                else {"types": ["bearer"], "tokens": [self.token]}
            ),
            "validation": {"inbound": "warn"},
        }
        config = self.workdir / f"settings-{self.port}.yaml"
        config.write_text(json.dumps(settings))  # JSON is YAML
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEKMET_")}
        with (self.workdir / f"server-{self.port}.log").open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "sekmet.cli", "serve", "-c", str(config)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise FhirServerError(
                    f"SEKMET exited with {self._process.returncode}: {self._log()}"
                )
            try:
                if self._http.get(f"{self.base_url}/metadata", timeout=10).status_code == 200:
                    return
            except requests.RequestException:
                pass  # not listening yet, or still starting up
            time.sleep(0.1)
        raise FhirServerError(f"SEKMET not ready after {STARTUP_SECONDS:.0f} s: {self._log()}")

    def _log(self) -> str:
        path = self.workdir / f"server-{self.port}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(group, signum)


@contextmanager
def running_fhir_server(workdir: Path, *, open_access: bool = False) -> Iterator[SekmetServer]:
    """Start a SEKMET server in ``workdir`` for the duration of the block."""
    server = SekmetServer(workdir, open_access=open_access)
    try:
        server.start()
        yield server
    finally:
        server.close()
