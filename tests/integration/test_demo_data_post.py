"""``cds-service demo-data --post`` to a real open FHIR R4 server, then the hook without prefetch.

This is the sandbox path: load the demo patients into an open server, then call patient-view with
only ``fhirServer`` and ``patientId``, as the CDS Hooks sandbox does; the service fetches the rest.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests
from pytest_httpserver import HTTPServer

from cds_service import create_app
from cds_service.cli import main
from cds_service.demo_data import demo_bundle, find_demo
from tests.conftest import dispose
from tests.fixture_support import check_outcome

from .fhir_server import SekmetServer, running_fhir_server

POSITIVE = "foot-drop-after-gluteal-injection"


@pytest.fixture(scope="module")
def open_fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SekmetServer]:
    """A SEKMET server with no authentication at all, like the sandbox's."""
    with running_fhir_server(tmp_path_factory.mktemp("open-fhir"), open_access=True) as server:
        yield server


def test_posted_demo_patients_give_the_card_by_fetch(open_fhir_server, settings, capsys):
    """Posted, read back, and a prefetch-less patient-view fetches them and gives the card."""
    assert main(["demo-data", "--post", open_fhir_server.base_url]) == 0
    out = capsys.readouterr().out
    assert f"stored at {open_fhir_server.base_url}" in out and "pv01" in out
    assert main(["demo-data", "--post", open_fhir_server.base_url]) == 0  # PUTs: idempotent
    capsys.readouterr()

    plain = requests.Session()
    plain.trust_env = False
    patient = plain.get(f"{open_fhir_server.base_url}/Patient/pv01", timeout=30).json()
    now = datetime.now(UTC)
    demo = find_demo(POSITIVE, now)
    assert demo is not None
    assert patient["birthDate"] == demo.request["prefetch"]["patient"]["birthDate"]
    conditions = plain.get(f"{open_fhir_server.base_url}/Condition?patient=pv01", timeout=30).json()
    assert conditions.get("total", len(conditions.get("entry", []))) == 2, "loaded once"

    request = {k: v for k, v in demo.request.items() if k != "prefetch"}
    request["fhirServer"] = open_fhir_server.base_url  # no fhirAuthorization: an open server
    app = create_app(settings, clock=lambda: now)
    try:
        response = app.test_client().post(f"/cds-services/{demo.service_id}", json=request)
    finally:
        dispose(app)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    check_outcome({"expected": demo.expected, "request": demo.request}, response.get_json())


def test_out_writes_the_bundle_and_request_prints_a_hook_request(tmp_path, capsys):
    """``--out`` writes the transaction Bundle; ``--request`` prints a plain hook request."""
    target = tmp_path / "demo.json"
    assert main(["demo-data", "--out", str(target)]) == 0
    written = json.loads(target.read_text("utf-8"))
    assert written["type"] == "transaction"
    assert len(written["entry"]) == len(demo_bundle(datetime.now(UTC))["entry"])
    assert main(["demo-data", "--request", POSITIVE]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["hook"] == "patient-view" and request["context"]["patientId"] == "pv01"
    assert "fhirServer" not in request and set(request["prefetch"]) >= {"patient", "conditions"}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def failing_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cds-service: demo-data: "), captured.err
    return lines[0]


def test_unreachable_secured_and_broken_servers_are_one_line_each(
    fhir_server, failing_server, capsys
):
    """Unreachable, 401 (a secured server), 500 and not-a-Bundle answers: one line, exit 2."""
    url = f"http://127.0.0.1:{_closed_port()}/fhir"
    assert "cannot reach" in _one_line_error(["demo-data", "--post", url], capsys)

    secured = _one_line_error(["demo-data", "--post", fhir_server.base_url], capsys)
    assert "answered 401" in secured and "open FHIR R4 server" in secured

    failing_server.expect_request("/fhir", method="POST").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "disk\nfull"}]},
        status=500,
    )
    broken = _one_line_error(["demo-data", "--post", failing_server.url_for("/fhir")], capsys)
    assert "answered 500 (disk full)" in broken

    failing_server.clear()
    failing_server.expect_request("/fhir", method="POST").respond_with_data("<html>ok</html>")
    odd = _one_line_error(["demo-data", "--post", failing_server.url_for("/fhir")], capsys)
    assert "did not answer with a FHIR Bundle" in odd

    assert "no demo called" in _one_line_error(["demo-data", "--request", "nobody"], capsys)
