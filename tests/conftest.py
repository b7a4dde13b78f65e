"""Shared test wiring: a fresh app per test on a real SQLite file, a clock, a live server."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from cds_service import create_app, schemas
from cds_service.config import DEFAULT_CONTENT_DIR, Settings
from cds_service.edge.discovery import load_services

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
FIXTURES = ROOT / "fixtures"
FOOTDROP = "footdrop-im-injection"

# --- the `integration` marker --------------------------------------------------------------------
# Integration tests need real parts beyond the app and the `test` extra: a FHIR server (sekmet),
# PostgreSQL (psycopg), schemathesis, a wheel build (the `integration` extra). They are marked here,
# so `pytest -m "not integration"` runs everything else with only `.[test]` installed.

#: Modules (relative to tests/) whose tests are all integration tests.
INTEGRATION_MODULES = ("integration/", "browser/", "test_fuzz_openapi.py")
#: Fixtures that start or need a real external part.
INTEGRATION_FIXTURES = frozenset(
    {"fhir_server", "clean_fhir_server", "postgres", "postgres_url", "postgres_engines"}
)
#: Integration-only packages a module imports at its top: it is not collected when it is not
#: installed and the run leaves integration tests out (a run that includes them fails loudly).
INTEGRATION_IMPORTS = {"test_fuzz_openapi.py": "schemathesis"}


def _flush_logs() -> None:
    from cds_service.logs import flush_logging

    flush_logging()


# Log lines are written by a background thread: flushed at the end of each phase, inside pytest's
# capture (trylast: innermost), each test's lines land in its own captured output.
@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    yield
    _flush_logs()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield
    _flush_logs()


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    yield
    _flush_logs()


def excludes_integration(config: pytest.Config) -> bool:
    """Whether the run's ``-m`` expression leaves integration tests out."""
    return re.search(r"\bnot\s+integration\b", config.getoption("markexpr") or "") is not None


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.parent != TESTS or not excludes_integration(config):
        return None
    package = INTEGRATION_IMPORTS.get(collection_path.name)
    if package is not None and importlib.util.find_spec(package) is None:
        return True
    return None


def is_integration(item: pytest.Item) -> bool:
    where = Path(str(item.path)).relative_to(TESTS).as_posix()
    callspec = getattr(item, "callspec", None)
    parameters = set(callspec.params) if callspec is not None else set()
    fixtures = set(getattr(item, "fixturenames", ())) - parameters  # a parameter is no fixture
    return (
        where.startswith(INTEGRATION_MODULES)
        or item.get_closest_marker("postgres") is not None
        or not INTEGRATION_FIXTURES.isdisjoint(fixtures)
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if is_integration(item):
            item.add_marker(pytest.mark.integration)


# The patient-view example request of the CDS Hooks 2.0 specification ("Calling a CDS Service").
SPEC_EXAMPLE_REQUEST: dict[str, Any] = {
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": "some-opaque-fhir-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read",
        "subject": "cds-service4",
    },
    "context": {"userId": "Practitioner/example", "patientId": "1288992", "encounterId": "89284"},
    "prefetch": {
        "patientToGreet": {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1925-12-23",
            "id": "1288992",
            "active": True,
        }
    },
}

#: FHIR limits of the test apps: a loopback FHIR server (or a mock) always answers within them,
#: however busy the machine, so a test that expects data fetched never gets a 412 because of load.
#: Tests about timeouts and deadlines set their own limits and stall far beyond them.
TEST_FHIR_TIMEOUT_SECONDS = 5.0
TEST_FHIR_DEADLINE_SECONDS = 10.0

_FOOTDROP_SPEC = next(s for s in load_services(DEFAULT_CONTENT_DIR) if s.id == FOOTDROP)
PREFETCH_KEYS = _FOOTDROP_SPEC.prefetch_keys
REQUIRED_KEYS = tuple(key for key in PREFETCH_KEYS if key in _FOOTDROP_SPEC.required_keys)


class FrozenClock:
    """A clock the tests set: fixtures are evaluated at their own evaluation time."""

    def __init__(self, moment: datetime | None = None) -> None:
        self.moment = moment or datetime(2025, 6, 13, 10, 0, tzinfo=UTC)

    def set(self, moment: datetime | str) -> None:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


def empty_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}


def patient_view_request(patient_id: str = "p1", **prefetch: Any) -> dict[str, Any]:
    """A valid patient-view request whose prefetch satisfies every key (empty unless given)."""
    data: dict[str, Any] = {key: empty_bundle() for key in PREFETCH_KEYS}
    data["patient"] = {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"}
    data.update(prefetch)
    return {
        "hook": "patient-view",
        "hookInstance": "9b1f6c2e-3f1a-4c39-9d0e-2f5b8f8d6a11",
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "prefetch": data,
    }


def assert_valid_response(body: Any) -> None:
    """Every 200 the service emits must conform to the CDS Hooks 2.0 response schema."""
    problems = schemas.problems("hook-response", body)
    assert problems == [], problems


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        content_dir=DEFAULT_CONTENT_DIR,
        auth=False,
        allow_insecure_fhir=True,
        fhir_timeout_seconds=TEST_FHIR_TIMEOUT_SECONDS,
        fhir_deadline_seconds=TEST_FHIR_DEADLINE_SECONDS,
    )


@pytest.fixture
def app(settings: Settings, clock: FrozenClock):
    application = create_app(settings, clock=clock)
    try:
        yield application
    finally:
        dispose(application)


def stored_cards(database_url: str) -> set[str]:
    """The card UUIDs the feedback table holds (what was really stored)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(text("SELECT card_uuid FROM feedback")).scalars())
    finally:
        engine.dispose()


def dispose(application: Any) -> None:
    """Close the app's connections and threads (apps made inside a test call this)."""
    application.extensions["cds_runtime"].close()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveServer:
    """The app on a real HTTP server on loopback, in a thread."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()


@pytest.fixture
def live_server(app) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def module_clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture(scope="module")
def module_live_server(tmp_path_factory, module_clock: FrozenClock) -> Iterator[LiveServer]:
    """One live server for a whole module (e.g. all fixtures), with a module-wide clock."""
    directory = tmp_path_factory.mktemp("live")
    settings = Settings(
        environment="test",
        database_url=f"sqlite:///{directory / 'feedback.sqlite3'}",
        content_dir=DEFAULT_CONTENT_DIR,
        auth=False,
        fhir_timeout_seconds=TEST_FHIR_TIMEOUT_SECONDS,
        fhir_deadline_seconds=TEST_FHIR_DEADLINE_SECONDS,
    )
    application = create_app(settings, clock=module_clock)
    try:
        with LiveServer(application) as server:
            yield server
    finally:
        dispose(application)


@pytest.fixture(scope="module")
def empty_fhir_server() -> Iterator[str]:
    """A FHIR server on loopback that holds nothing more: every search is an empty Bundle."""
    server = HTTPServer(host="127.0.0.1")
    server.expect_request(re.compile(".*"), method="GET").respond_with_json(
        {"resourceType": "Bundle", "type": "searchset", "total": 0},
        content_type="application/fhir+json",
    )
    server.start()
    yield server.url_for("/fhir")
    server.clear()
    server.stop()


class _Causes(logging.Handler):
    """Collects the precise 412 causes the hook runner logs (never sent to the client)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.causes: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        failures = getattr(record, "fetch_failures", None)
        if isinstance(failures, dict):
            self.causes.append(failures)


@pytest.fixture
def fetch_causes() -> Iterator[list[dict[str, str]]]:
    """Each 412's ``{key: precise cause}``, read from the log as an operator would."""
    handler = _Causes()
    logger = logging.getLogger("cds_service.hooks")
    logger.addHandler(handler)
    try:
        yield handler.causes
    finally:
        logger.removeHandler(handler)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
