"""Faults, measured end to end over HTTP: a slow, dead or garbage-sending FHIR server, a database
that stops accepting writes, and a gunicorn worker killed while feedback is being posted.

The FHIR server is a real threaded HTTP server on loopback (pytest-httpserver), or a raw socket
for faults HTTP servers do not make; the databases are real SQLite files and, where PostgreSQL's
binaries are installed, a throw-away PostgreSQL cluster stopped and started for the test.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds_service import create_app, schemas
from tests.conftest import (
    FIXTURES,
    FOOTDROP,
    REQUIRED_KEYS,
    ROOT,
    LiveServer,
    assert_valid_response,
    load_json,
    stored_cards,
    with_settings,
)

FHIR_JSON = "application/fhir+json"
HOOK_URL = f"/cds-services/{FOOTDROP}"
FEEDBACK_URL = f"{HOOK_URL}/feedback"
#: The service's FHIR limits in these tests: long enough that a healthy loopback server always
#: answers in time on a busy machine, short enough that waiting for one deadline is cheap.
FHIR_TIMEOUT_SECONDS = 2.0
FHIR_DEADLINE_SECONDS = 3.0
#: How long a faulty server stalls: far beyond the deadline, so "answered by the deadline" and
#: "waited for the server" cannot be confused however busy the machine is.
STALL_SECONDS = 30.0
#: What the service may take beyond its FHIR deadline to answer (parse, rules, HTTP, a busy CI);
#: still far below STALL_SECONDS.
MARGIN_SECONDS = 3.0
CLASSIC = load_json(FIXTURES / "patient-view" / "01-classic-left-dorsogluteal.json")


# --- the FHIR server ---------------------------------------------------------------------------


class FhirServer(HTTPServer):
    """A threaded loopback FHIR server answering fixture 01's data, unless a test says otherwise.

    ``behave(fn)`` replaces the answer: ``fn(resource_type, request)`` returns a Response.  Slow
    answers wait on ``released`` (set at teardown) so no handler outlives its test.
    """

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", threaded=True)
        self.released = threading.Event()
        self.answers = _answers(CLASSIC["request"]["prefetch"])
        self._behaviour: Callable[[str, Request], Response] = self._normal
        self.expect_request(re.compile("/fhir/.*")).respond_with_handler(self._handle)

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.01)

    def behave(self, behaviour: Callable[[str, Request], Response]) -> None:
        self._behaviour = behaviour

    def _handle(self, request: Request) -> Response:
        resource_type = request.path.removeprefix("/fhir/").split("/")[0]
        return self._behaviour(resource_type, request)

    def _normal(self, resource_type: str, _request: Request) -> Response:
        return fhir_json(self.answers.get(resource_type, _bundle([])))

    @property
    def base(self) -> str:
        return self.url_for("/fhir")


def _bundle(resources: list[Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": resources}


def _answers(prefetch: dict[str, Any]) -> dict[str, Any]:
    answers = {"Patient": prefetch["patient"]}
    for value in prefetch.values():
        if value and value["resourceType"] == "Bundle" and value["entry"]:
            answers[value["entry"][0]["resource"]["resourceType"]] = value
    return answers


def fhir_json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type=FHIR_JSON)


@pytest.fixture
def fhir() -> Iterator[FhirServer]:
    server = FhirServer()
    server.start()
    yield server
    server.released.set()
    server.clear()
    server.stop()


# --- the service -------------------------------------------------------------------------------


@pytest.fixture
def settings(settings):
    """The shared test settings with FHIR limits a loaded machine meets (see FHIR_*_SECONDS)."""
    return with_settings(
        settings,
        fhir_timeout_seconds=FHIR_TIMEOUT_SECONDS,
        fhir_deadline_seconds=FHIR_DEADLINE_SECONDS,
    )


def close(app: Any) -> None:
    """Dispose the database pools and stop the app's FHIR client (threads, pooled sockets)."""
    app.extensions["cds_runtime"].close()


@pytest.fixture
def service(settings, clock) -> Iterator[LiveServer]:
    """The app on a real HTTP server on loopback, at fixture 01's evaluation time."""
    clock.set(CLASSIC["evalTime"])
    app = create_app(settings, clock=clock)
    with LiveServer(app) as server:
        yield server
    close(app)


def fallback_request(fhir_base: str, missing: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Fixture 01's request without the ``missing`` prefetch keys, naming ``fhir_base``."""
    request = copy.deepcopy(CLASSIC["request"])
    for key in missing:
        request["prefetch"].pop(key)
    request["fhirServer"] = fhir_base
    request["fhirAuthorization"] = {
        "access_token": "resilience-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "footdrop-cds",
    }
    return request


def call(service: LiveServer, request: dict[str, Any]) -> tuple[requests.Response, float]:
    """POST the hook call over HTTP; the response and the seconds it took."""
    started = time.monotonic()
    response = requests.post(service.url + HOOK_URL, json=request, timeout=STALL_SECONDS * 2)
    return response, time.monotonic() - started


def within_deadline(settings, seconds: float) -> bool:
    """Answered by the FHIR deadline plus overhead: far sooner than a stalled server answers."""
    assert settings.fhir_deadline_seconds + MARGIN_SECONDS < STALL_SECONDS / 2
    return seconds < settings.fhir_deadline_seconds + MARGIN_SECONDS


def assert_412_naming(
    response: requests.Response, reasons: set[str], causes: list[dict[str, str]]
) -> None:
    """412 names each required key as "unavailable"; the precise cause is in the log only."""
    assert response.status_code == 412, response.text
    body = response.json()
    assert schemas.problems("error", body) == []
    assert {detail.split(": ", 1)[1] for detail in body["details"]} == {"unavailable"}
    assert {detail.split(": ", 1)[0] for detail in body["details"]} == set(REQUIRED_KEYS)
    logged = causes[-1]
    assert set(logged) == set(REQUIRED_KEYS)
    assert set(logged.values()) <= reasons, logged


# --- FHIR server faults ------------------------------------------------------------------------


def test_answers_fetched_in_parallel_give_the_card(fhir, service, settings):
    """Seven keys fetched from a healthy FHIR server give fixture 01's card, well within time."""
    response, seconds = call(service, fallback_request(fhir.base))
    assert response.status_code == 200, response.text
    assert_valid_response(response.json())
    assert len(response.json()["cards"]) == 1
    assert within_deadline(settings, seconds)


def test_slow_fhir_server_gives_412_within_the_deadline(fetch_causes, fhir, service, settings):
    """A FHIR server slower than the per-request timeout costs one deadline, then 412."""

    def slow(_type: str, _request: Request) -> Response:
        fhir.released.wait(STALL_SECONDS)
        return fhir_json(_bundle([]))

    fhir.behave(slow)
    response, seconds = call(service, fallback_request(fhir.base))
    assert_412_naming(response, {"timeout", "deadline"}, fetch_causes)
    assert within_deadline(settings, seconds), seconds


def test_slow_but_timely_fhir_server_still_gives_the_card(fhir, service, settings):
    """Queries that each take a good part of the timeout, run in parallel, still give the card:
    the seven of them cost about one query's time, not seven."""
    normal = fhir._normal
    each = settings.fhir_timeout_seconds / 4
    assert each * len(REQUIRED_KEYS) > settings.fhir_deadline_seconds  # one at a time: too late

    def sluggish(resource_type: str, request: Request) -> Response:
        time.sleep(each)
        return normal(resource_type, request)

    fhir.behave(sluggish)
    response, seconds = call(service, fallback_request(fhir.base))
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1
    assert each <= seconds < settings.fhir_deadline_seconds, seconds


def test_slow_optional_key_does_not_cost_the_card(fhir, service, settings):
    """An optional key (appointments) stuck on the server is dropped and the card still comes."""
    normal = fhir._normal

    def stuck_appointments(resource_type: str, request: Request) -> Response:
        if resource_type == "Appointment":
            fhir.released.wait(STALL_SECONDS)
        return normal(resource_type, request)

    fhir.behave(stuck_appointments)
    request = fallback_request(fhir.base, (*REQUIRED_KEYS, "appointments"))
    response, seconds = call(service, request)
    assert response.status_code == 200, response.text
    assert len(response.json()["cards"]) == 1
    assert within_deadline(settings, seconds), seconds


def test_fhir_server_down_gives_412_at_once(fetch_causes, service, settings):
    """A FHIR server that refuses connections gives 412 'connection error' without waiting."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    response, seconds = call(service, fallback_request(f"http://127.0.0.1:{port}/fhir"))
    assert_412_naming(response, {"connection error"}, fetch_causes)
    assert seconds < settings.fhir_timeout_seconds, seconds  # no request timeout was waited for


def test_fhir_server_that_never_answers_gives_412_within_the_deadline(
    fetch_causes, service, settings
):
    """A server that accepts connections but never answers costs at most the deadline."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/fhir"
        response, seconds = call(service, fallback_request(url))
    assert_412_naming(response, {"timeout", "deadline"}, fetch_causes)
    assert within_deadline(settings, seconds), seconds


def test_body_trickling_forever_is_cut_at_the_deadline(fetch_causes, fhir, service, settings):
    """A body that keeps arriving a byte at a time never holds the answer past the deadline."""

    def trickle(_type: str, _request: Request) -> Response:
        def drip() -> Iterator[bytes]:
            yield b'{"resourceType": "Bundle", "entry": ['
            while not fhir.released.wait(0.05):
                yield b" "

        return Response(drip(), content_type=FHIR_JSON)

    fhir.behave(trickle)
    response, seconds = call(service, fallback_request(fhir.base))
    assert_412_naming(response, {"timeout", "deadline"}, fetch_causes)
    assert within_deadline(settings, seconds), seconds


GARBAGE_ENTRIES = [
    1,
    "x",
    None,
    {"resource": []},
    {"resource": {"resourceType": 5}},
    {"resource": {"resourceType": "Condition", "code": "M21.372", "onsetDateTime": 12}},
    {"resource": {"resourceType": "Condition", "clinicalStatus": {"coding": "active"}}},
    {"resource": {"resourceType": "Procedure", "performedDateTime": "yesterday", "code": []}},
    {"resource": {"resourceType": "Observation", "valueInteger": "two", "bodySite": 3}},
    {"resource": {"resourceType": "MedicationAdministration", "dosage": {"route": 1}}},
]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expected", "reasons"),
    [
        (200, "text/html", b"<html><body>Gateway error</body></html>", 412, {"not json"}),
        (200, FHIR_JSON, b'{"resourceType": "Bundle", "entry": [', 412, {"truncated json"}),
        (500, FHIR_JSON, b'{"resourceType": "OperationOutcome"}', 412, {"http 500"}),
        (200, FHIR_JSON, b'{"resourceType": "OperationOutcome"}', 412, {"not a Bundle/resource"}),
        (200, FHIR_JSON, b"[1, 2, 3]", 412, {"not a Bundle/resource"}),
        (200, FHIR_JSON, b'\xff\xfe{"resourceType": "Bundle"}', 412, {"not json"}),
        (200, FHIR_JSON, b"[" * 100_000 + b"]" * 100_000, 412, {"not json"}),
        (200, FHIR_JSON, json.dumps(_bundle(GARBAGE_ENTRIES)).encode(), 200, set()),
    ],
    ids=[
        "html",
        "truncated",
        "http-500",
        "outcome",
        "array",
        "not-utf8",
        "deep-nesting",
        "garbage-entries",
    ],
)
def test_fhir_server_sending_garbage(
    fetch_causes, fhir, service, settings, status, content_type, body, expected, reasons
):
    """Whatever a FHIR server sends, the answer is 412 naming why, or cards; never a 5xx."""
    fhir.behave(lambda _type, _request: Response(body, status=status, content_type=content_type))
    response, seconds = call(service, fallback_request(fhir.base))
    if expected == 412:
        assert_412_naming(response, reasons, fetch_causes)
    else:
        assert response.status_code == 200, response.text
        assert_valid_response(response.json())
    assert within_deadline(settings, seconds), seconds


# --- the feedback database ---------------------------------------------------------------------


def feedback_item(card: str) -> dict[str, Any]:
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "afo"}],
        "outcomeTimestamp": "2025-06-13T10:05:00Z",
    }


def post_feedback(url: str, *cards: str, session: Any = requests) -> int:
    response = session.post(
        url + FEEDBACK_URL, json={"feedback": [feedback_item(c) for c in cards]}, timeout=15
    )
    if response.status_code == 503:
        assert response.json()["error"] == "feedback store unavailable"
    return response.status_code


class Unwritable:
    """Files made unwritable even for root (``chattr +i``; ``chmod`` for other users)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [p for p in paths if p.exists()]
        self._modes = {p: p.stat().st_mode for p in self.paths}

    def __enter__(self) -> Unwritable:
        if os.geteuid() != 0:
            for path in self.paths:
                path.chmod(0o444)
            return self
        done = subprocess.run(
            ["chattr", "+i", *map(str, self.paths)], capture_output=True, check=False
        )
        if done.returncode != 0:
            self.__exit__()
            pytest.skip(f"cannot make files immutable here: {done.stderr.decode().strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", *map(str, self.paths)], capture_output=True)
        for path, mode in self._modes.items():
            path.chmod(mode)


def test_unwritable_sqlite_gives_503_and_loses_nothing_acknowledged(service, settings):
    """With the SQLite files unwritable feedback answers 503; what got 200 before and after is
    stored, and what got 503 is not."""
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    assert post_feedback(service.url, "before-1", "before-2") == 200
    # Not the -shm file: SQLite maps it into memory, and a write fault there is SIGBUS.
    files = [database, Path(f"{database}-wal")]
    with Unwritable(files):
        refused = [post_feedback(service.url, f"during-{n}") for n in range(3)]
    assert refused == [503, 503, 503]
    assert post_feedback(service.url, "after-1") == 200
    assert stored_cards(settings.database_url) == {"before-1", "before-2", "after-1"}


class Postgres:
    """A throw-away PostgreSQL cluster on a free loopback port (Debian's binaries, as postgres)."""

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.data = workdir / "pgdata"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str, check: bool = True) -> None:
        line = " ".join(f"'{part}'" for part in command)
        subprocess.run(
            ["su", "postgres", "-s", "/bin/sh", "-c", line],
            check=check,
            capture_output=True,
            timeout=60,
        )

    def init(self) -> None:
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        self._as_postgres(
            f"{self.bindir}/initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N"
        )

    def start(self) -> None:
        options = f"-k /tmp -p {self.port} -h 127.0.0.1 -c fsync=off"
        log = str(self.data / "server.log")  # not our pipes: pg_ctl would wait on them
        self._as_postgres(
            f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start"
        )

    def stop(self, mode: str = "fast", check: bool = True) -> None:
        if (self.data / "postmaster.pid").exists() or check:
            pg_ctl = f"{self.bindir}/pg_ctl"
            self._as_postgres(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop", check=check)


def _postgres_bindir() -> Path | None:
    named = os.environ.get("FOOTDROP_PGBIN")
    candidates = [Path(named)] if named else sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    for bindir in reversed(candidates):
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of our own (the suite's shared one must stay up for other tests)."""
    bindir = _postgres_bindir()
    usable = bindir is not None and os.geteuid() == 0 and shutil.which("su")
    if not usable:
        if os.environ.get("FOOTDROP_REQUIRE_POSTGRES") == "1":
            pytest.fail("FOOTDROP_REQUIRE_POSTGRES=1 but PostgreSQL cannot be started here")
        pytest.skip("PostgreSQL binaries (and root, to run them as postgres) are not available")
    with tempfile.TemporaryDirectory(prefix="footdrop-pg-") as workdir:
        os.chmod(workdir, 0o755)
        server = Postgres(bindir, Path(workdir))
        try:
            server.init()
            server.start()
            yield server
        finally:
            server.stop("immediate", check=False)


def test_postgres_down_gives_503_and_loses_nothing_acknowledged(postgres, settings, clock):
    """While PostgreSQL is stopped feedback and health answer 503; after it is back, everything
    that got 200 is stored and nothing that got 503 is."""
    app = create_app(with_settings(settings, database_url=postgres.url), clock=clock)
    try:
        with LiveServer(app) as server:
            assert post_feedback(server.url, "before-1") == 200
            postgres.stop("immediate")
            assert [post_feedback(server.url, f"during-{n}") for n in range(3)] == [503] * 3
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 503
            postgres.start()
            assert post_feedback(server.url, "after-1") == 200
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        close(app)
    assert stored_cards(postgres.url) == {"before-1", "after-1"}


# --- a gunicorn worker killed under load -------------------------------------------------------


#: Generous on purpose: a worker's first boot takes seconds on a busy machine.
GUNICORN_START_SECONDS = 60.0
GUNICORN_STOP_SECONDS = 30.0


class Gunicorn:
    """The service under the repository's gunicorn config on a free loopback port.

    The master runs in a session (process group) of its own, so ``stop()`` reaches the master and
    every worker even when start-up failed half-way; ``stop()`` always waits for the master.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "HOST": "127.0.0.1", "PORT": str(self.port)}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until every worker is up and /healthz answers 200; stopped on failure."""
        assert self.process is None, "already started"
        command = [sys.executable, "-m", "gunicorn", "-c", "python:cds_service.gunicorn_conf"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "cds_service:create_app()"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + GUNICORN_START_SECONDS
        with requests.Session() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"gunicorn exited: {self.log_tail()}")
                if len(self.workers()) == int(self.env["WEB_CONCURRENCY"]):
                    try:
                        if session.get(self.url + "/healthz", timeout=10).status_code == 200:
                            return
                    except requests.RequestException:
                        pass  # not listening yet, or a worker still booting
                time.sleep(0.1)
        raise AssertionError(
            f"gunicorn not ready after {GUNICORN_START_SECONDS:.0f} s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def workers(self) -> list[int]:
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self) -> None:
        """SIGTERM the whole process group (graceful), SIGKILL it if that takes too long, and
        reap the master; a no-op when not running."""
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the master leads its own process group
        _signal_group(group, signal.SIGTERM)
        try:
            process.wait(timeout=GUNICORN_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGKILL)
            process.wait(timeout=GUNICORN_STOP_SECONDS)
        _signal_group(group, signal.SIGKILL)  # a worker the master did not take down


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(group, signum)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Gunicorn]]:
    """``gunicorn(env)``: a not yet started server; every one made is stopped at teardown."""
    made: list[Gunicorn] = []

    def make(env: dict[str, str]) -> Gunicorn:
        server = Gunicorn(env, tmp_path / "gunicorn.log")
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def _wait_for(semaphore: threading.Semaphore, count: int, seconds: float, what: str) -> None:
    """``count`` releases of ``semaphore`` within ``seconds`` in all, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    for done in range(count):
        if not semaphore.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"only {done} of {count} {what} within {seconds:.0f} s")


def test_worker_killed_while_posting_loses_no_acknowledged_feedback(tmp_path, gunicorn):
    """Feedback posted from several threads while a worker is SIGKILLed: after a restart every
    item that got 200 is in the store."""
    database_url = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        CDS_ENVIRONMENT="test",
        CDS_AUTH="off",
        CDS_DATABASE_URL=database_url,
        CDS_LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="4",
    )
    server = gunicorn(env)
    server.start()
    acknowledged: set[str] = set()
    lock = threading.Lock()
    answered = threading.Semaphore(0)
    stop = threading.Event()

    def client(name: str) -> None:
        with requests.Session() as session:
            for n in range(5000):
                if stop.is_set():
                    return
                card = f"{name}-{n}"
                try:
                    status = post_feedback(server.url, card, session=session)
                except requests.RequestException:
                    continue  # the killed worker's connections: not acknowledged
                if status == 200:
                    with lock:
                        acknowledged.add(card)
                answered.release()

    threads = [threading.Thread(target=client, args=(f"t{i}",)) for i in range(6)]
    try:
        for thread in threads:
            thread.start()
        _wait_for(answered, 150, 120, "answers before the kill")
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        _wait_for(answered, 100, 120, "answers after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    server.stop()
    server.start()  # a restart on the same file
    assert post_feedback(server.url, "after-restart") == 200
    server.stop()
    log = (tmp_path / "gunicorn.log").read_text()
    assert f"Worker (pid:{victim}) was sent SIGKILL" in log
    assert len(acknowledged) > 150
    assert acknowledged <= stored_cards(database_url)
