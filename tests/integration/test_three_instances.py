"""The compose topology on this machine, without containers: three instances, one PostgreSQL,
nginx in front (its configuration from cds_service/deploy_nginx.py, as the compose file's is).

Each instance is `cds-service serve` with ``CDS_PROXY=off`` (what a compose replica runs) on its
own loopback port, with auth on and real ES384-signed JWTs whose JWK Set is served on loopback.
It shows that a token replayed on another instance is refused; that feedback posted through the
proxy while one instance is SIGKILLed loses nothing acknowledged (every 200 is in PostgreSQL);
that hook calls keep succeeding through the other two; and that the proxy takes the dead
instance out and, once it is restarted, back in (seen in that instance's own access log).

The three start at once on an empty database: the schema each creates at start-up may race, and
all three must come up. Every process is stopped in ``finally`` (process groups).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pytest_httpserver import HTTPServer
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.slow_clients import free_port
from cds_service.config import Settings
from cds_service.deploy_nginx import cluster_layout, render_cluster_conf
from tests.conftest import stored_cards
from tests.integration.serve_support import require_nginx
from tests.processes import stop_group, wait_until_healthy

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
ISSUER = "https://ehr.topology.invalid"
KID = "topology-es384"
HOOK_PATH = "/cds-services/footdrop-im-injection"
FEEDBACK_PATH = f"{HOOK_PATH}/feedback"
#: Client threads sending through the proxy: at most this many requests are in flight at the kill.
CLIENTS = 4
#: nginx worker processes: each keeps its own count of an instance's failures (no shared zone).
NGINX_WORKERS = 2
#: How long nginx leaves a failed instance out before trying it again (short for the test).
FAIL_TIMEOUT_SECONDS = 2.0


def _hook_body() -> dict[str, Any]:
    example = json.loads((ROOT / "cds_service/examples/patient-view-foot-drop.json").read_text())
    request = example["request"]
    request.pop("fhirServer", None)  # everything needed is prefetched: no FHIR server involved
    return request


HOOK_BODY = _hook_body()


@pytest.fixture
def database() -> Iterator[str]:
    """A database of its own on the suite's PostgreSQL, created empty, dropped afterwards."""
    url = os.environ.get("FOOTDROP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FOOTDROP_REQUIRE_POSTGRES") == "1":
            pytest.fail("FOOTDROP_REQUIRE_POSTGRES=1 but FOOTDROP_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server: .ci/run starts one (scripts/start-postgres.sh)")
    name = f"footdrop_topology_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class Client:
    """A CDS client: an ES384 key whose JWK Set the instances fetch, and fresh tokens."""

    def __init__(self, httpserver: HTTPServer, public_url: str) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(kid=KID, alg="ES384", use="sig")
        httpserver.expect_request("/topology/jwks").respond_with_json({"keys": [jwk]})
        self.jwks_url = httpserver.url_for("/topology/jwks")
        self.public_url = public_url

    def token(self, path: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": self.public_url + path,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": KID})

    def post(self, base: str, path: str, body: Any, token: str | None = None) -> int:
        """POST with a fresh token (or the one given); the status, 0 when the connection broke
        without a whole answer, -1 when none came in time (never expected)."""
        headers = {"Authorization": f"Bearer {token or self.token(path)}"}
        try:
            return requests.post(base + path, json=body, headers=headers, timeout=60).status_code
        except requests.Timeout:
            return -1
        except requests.RequestException:
            return 0


class Instance:
    """`cds-service serve` with CDS_PROXY=off on a loopback port, in a process group of its own."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.access_log = directory / f"{name}-access.log"
        self.log = directory / f"{name}.log"
        self.env = {**env, "GUNICORN_CMD_ARGS": f"--access-logfile {self.access_log}"}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "cds_service", "serve", "--host", "127.0.0.1"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        try:
            wait_until_healthy(self.process, self.url + "/healthz", seconds=120)
        except AssertionError as error:
            raise AssertionError(f"{self.name}: {error}: {self.log.read_text()[-2000:]}") from None

    def kill(self) -> None:
        """SIGKILL the master and its workers at once: the machine is gone."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)

    def hook_calls_served(self) -> int:
        """Hook calls this instance answered, from its own gunicorn access log."""
        if not self.access_log.exists():
            return 0
        served = 0
        for row in self.access_log.read_text().splitlines():  # gunicorn's access log, as JSON
            try:
                entry = json.loads(row)
            except ValueError:
                continue  # a line still being written
            served += (entry.get("method"), entry.get("path"), entry.get("status")) == (
                "POST",
                HOOK_PATH,
                200,
            )
        return served


class Nginx:
    """The real nginx in front of the instances, configured by cds_service.deploy_nginx."""

    def __init__(self, port: int, upstreams: list[str], directory: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = directory / "nginx-access.log"
        self.runtime = directory / "nginx"
        self.runtime.mkdir()
        user = None
        if os.geteuid() == 0:  # workers keep our identity, as `cds-service serve` does
            user = (pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name)
        layout = cluster_layout(
            f"127.0.0.1:{self.port}",
            upstreams,
            self.runtime,
            fail_timeout_seconds=FAIL_TIMEOUT_SECONDS,
            access_log=str(self.access_log),
            user=user,
        )
        self.conf = self.runtime / "nginx.conf"
        self.conf.write_text(render_cluster_conf(Settings(), layout))
        self.command = [require_nginx(), "-e", "stderr", "-p", str(self.runtime), "-c"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.runtime / "stderr.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, str(self.conf)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)

    def upstreams_tried(self, offset: int = 0) -> list[tuple[int, list[str]]]:
        """Per request logged after ``offset``: its status and the instances tried, in order."""
        with self.access_log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode().splitlines()
        tried = []
        for line in lines:
            before, after = line.split(" upstream=", 1)
            addresses = after.split(" upstream_status=", 1)[0]
            tried.append((int(before.rsplit(" ", 1)[1]), addresses.split(", ")))
        return tried


@dataclass(frozen=True)
class Sent:
    kind: str  # "hook" or "feedback"
    card: str | None
    status: int
    started: float  # time.monotonic()


class Load:
    """CLIENTS threads alternating hook calls and feedback through the proxy until stopped."""

    def __init__(self, client: Client, base: str) -> None:
        self.client = client
        self.base = base
        self.results: list[Sent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(CLIENTS)

    def _run(self, worker: int) -> None:
        sequence = 0
        while not self._stop.is_set():
            sequence += 1
            started = time.monotonic()
            if sequence % 2:
                card = f"card-{worker}-{sequence}-{uuid.uuid4().hex[:8]}"
                item = {
                    "card": card,
                    "outcome": "accepted",
                    "acceptedSuggestions": [{"id": "afo"}],
                    "outcomeTimestamp": "2025-06-13T10:05:00Z",
                }
                status = self.client.post(self.base, FEEDBACK_PATH, {"feedback": [item]})
                sent = Sent("feedback", card, status, started)
            else:
                sent = Sent(
                    "hook", None, self.client.post(self.base, HOOK_PATH, HOOK_BODY), started
                )
            with self._lock:
                self.results.append(sent)

    def __enter__(self) -> Load:
        self._futures = [self._pool.submit(self._run, n) for n in range(CLIENTS)]
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def wait_for(self, total: int, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while self.count() < total:
            assert time.monotonic() < deadline, f"only {self.count()} of {total} requests done"
            assert not any(f.done() for f in self._futures), "a client thread died"
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)
        for future in self._futures:
            future.result()


def test_three_instances_behind_nginx_survive_one_killed(
    database: str, httpserver: HTTPServer, tmp_path: Path
) -> None:
    require_nginx()
    nginx_port = free_port()
    client = Client(httpserver, public_url=f"http://127.0.0.1:{nginx_port}")
    # Each instance its own: no settings, gunicorn or metrics directory inherited from this run.
    private = ("CDS_", "GUNICORN_", "PROMETHEUS_MULTIPROC_DIR", "FOOTDROP_METRICS_OWNER")
    env = {k: v for k, v in os.environ.items() if not k.startswith(private)}
    env.update(
        CDS_ENVIRONMENT="test",
        CDS_PROXY="off",
        CDS_AUTH="on",
        CDS_JWT_ISSUERS=json.dumps({ISSUER: client.jwks_url}),
        CDS_PUBLIC_URL=client.public_url,
        CDS_DATABASE_URL=database,
        CDS_LOG_LEVEL="WARNING",
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="4",
    )
    instances = [Instance(name, env, tmp_path) for name in ("a", "b", "c")]
    nginx = Nginx(nginx_port, [i.address for i in instances], tmp_path)
    try:
        for instance in instances:  # all at once, on an empty database: the schema races
            instance.start()
        for instance in instances:
            instance.wait_ready()
        nginx.start()
        assert nginx.process is not None
        wait_until_healthy(nginx.process, nginx.url + "/healthz", seconds=60)
        a, b, c = instances

        # A token used once is refused on every other instance, and through the proxy.
        token = client.token(HOOK_PATH)
        assert client.post(a.url, HOOK_PATH, HOOK_BODY, token) == 200
        assert client.post(b.url, HOOK_PATH, HOOK_BODY, token) == 401
        assert client.post(c.url, HOOK_PATH, HOOK_BODY, token) == 401
        assert client.post(nginx.url, HOOK_PATH, HOOK_BODY, token) == 401
        assert client.post(nginx.url, HOOK_PATH, HOOK_BODY) == 200  # a fresh one is fine

        # Kill b under load.
        with Load(client, nginx.url) as load:
            load.wait_for(30)
            log_offset = nginx.access_log.stat().st_size
            b.kill()
            killed_at = time.monotonic()
            before = load.count()
            load.wait_for(before + 120)
            # Long enough for nginx to try b again (after fail_timeout) and go on without it.
            while time.monotonic() - killed_at < 2.5 * FAIL_TIMEOUT_SECONDS:
                load.wait_for(load.count() + 1)
            after_seconds = time.monotonic() - killed_at
        results = list(load.results)

        # What b had in flight fails: 502 from nginx, or (0) the connection closed without a
        # whole answer when b died after its headers had gone out. Neither acknowledges anything.
        failed = [r for r in results if r.status != 200]
        assert {r.status for r in failed} <= {0, 502}, failed
        # Only that fails (nginx re-sends no POST it has sent: the jti may be claimed already);
        # from shortly after the kill on, every request succeeds.
        assert len(failed) <= 2 * CLIENTS, failed
        late = [r for r in results if r.started > killed_at + 2.0]
        assert all(r.status == 200 for r in late), [r for r in late if r.status != 200]
        acknowledged = {r.card for r in results if r.kind == "feedback" and r.status == 200}
        assert acknowledged, "no feedback was acknowledged"
        assert acknowledged <= stored_cards(database), "an acknowledged feedback item is lost"
        hooks_after = [r for r in results if r.kind == "hook" and r.started > killed_at]
        assert sum(r.status == 200 for r in hooks_after) >= 40

        # nginx took b out: after the kill it tried b only for the requests in flight, then once
        # per worker per fail_timeout; without that, least_conn would send it a third of them.
        after_kill = nginx.upstreams_tried(log_offset)
        tried_b = [tried for _, tried in after_kill if b.address in tried]
        windows = 1 + int(after_seconds // FAIL_TIMEOUT_SECONDS) + 1
        assert len(tried_b) <= CLIENTS + NGINX_WORKERS * windows, tried_b
        assert len(after_kill) >= 120
        # Everything answered after the kill was answered by a or c.
        answered_by = {tried[-1] for status, tried in after_kill if status == 200}
        assert answered_by == {a.address, c.address}

        # ... and back in: restarted on its port, it gets traffic through the proxy again.
        served_before = b.hook_calls_served()
        b.start()
        b.wait_ready()
        deadline = time.monotonic() + 60
        statuses = []
        while b.hook_calls_served() == served_before:
            assert time.monotonic() < deadline, "the restarted instance never got traffic again"
            statuses.append(client.post(nginx.url, HOOK_PATH, HOOK_BODY))
        assert set(statuses) == {200}
        assert a.hook_calls_served() > 0 and c.hook_calls_served() > 0
    finally:
        nginx.stop()
        for instance in instances:
            instance.stop()


#: Processes that create the schema at the same moment (replicas starting together).
RACERS = 6


def test_the_schema_is_created_safely_by_many_instances_at_once(database: str) -> None:
    """`cds-service init-db` (what the compose file's migrate service and the Kubernetes init
    container run, and what every instance does at start-up) released at one instant from
    several processes on an empty database: every one succeeds and the tables are there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATABASE_URL"] = database
    release = time.time() + 3.0  # after every interpreter has started and imported
    program = (
        "import sys, time; from cds_service.cli import main; "
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time())); sys.exit(main(['init-db']))"
    )
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", program, repr(release)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(RACERS)
    ]
    try:
        errors = [racer.communicate(timeout=120)[1].decode() for racer in racers]
    finally:
        for racer in racers:
            stop_group(racer)
    assert [racer.returncode for racer in racers] == [0] * RACERS, errors
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            tables = set(
                connection.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
    finally:
        engine.dispose()
    assert {"feedback", "feedback_accepted_suggestion", "jwt_replay"} <= tables
