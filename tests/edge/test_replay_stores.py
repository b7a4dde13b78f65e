"""Issue 14: the replay store on each backend (SQLite, PostgreSQL, Redis): one winner per jti
across processes, claims surviving a restart of the store, expiry; no timing assertions.

Redis runs as a real ``redis-server`` on a free port (Debian's package); without it these tests
skip, unless FOOTDROP_REQUIRE_REDIS=1 (.ci/run) makes that a failure.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cds_service import open_replay_guard
from cds_service.errors import StartupError
from tests.processes import free_port

ISSUER = "https://ehr.example.org"
JTIS = 120
THREADS = 6


# --- stores -------------------------------------------------------------------------------------


class RedisServer:
    """``redis-server`` on a free loopback port; ``aof`` keeps claims across a restart."""

    def __init__(self, directory: Path, *, aof: bool) -> None:
        self.port = free_port()
        self.directory = directory
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            [binary, "--save", "", *where, *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, "redis-server exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server never answered"
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a clean shutdown
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def _require_redis() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("FOOTDROP_REQUIRE_REDIS") == "1":
            pytest.fail("FOOTDROP_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    _require_redis()
    server = RedisServer(tmp_path, aof=True)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _postgres_url() -> str:
    url = os.environ.get("FOOTDROP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FOOTDROP_REQUIRE_POSTGRES") == "1":
            pytest.fail("FOOTDROP_REQUIRE_POSTGRES=1 but FOOTDROP_TEST_POSTGRES_URL is not set")
        pytest.skip("FOOTDROP_TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh replay store of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'replay.sqlite3'}"
    elif request.param == "postgresql":
        yield _postgres_url()
    else:
        yield request.getfixturevalue("redis_server").url


# --- one winner per jti across processes -----------------------------------------------------


def _claim_all(url: str, issuer: str, start_at: float, out: multiprocessing.Queue) -> None:
    """In a child process: THREADS threads each claim every jti of the issuer once."""
    guard = open_replay_guard(url)
    granted: list[str] = []
    lock = threading.Lock()
    while time.time() < start_at:
        time.sleep(0.01)

    def run(offset: int) -> None:
        mine = []
        for n in range(JTIS):
            jti = f"jti-{(n + offset * 7) % JTIS}"
            if guard.claim(issuer, jti, time.time() + 600):
                mine.append(jti)
        with lock:
            granted.extend(mine)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    guard.dispose()
    out.put(granted)


def test_each_jti_is_granted_once_across_processes_and_threads(store_url: str) -> None:
    """Two processes x six threads claim the same 120 jtis: each is granted exactly once."""
    issuer = f"https://ehr-{uuid.uuid4()}.example.org"
    open_replay_guard(store_url).dispose()  # the table exists before the race
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 2.0
    children = [
        context.Process(target=_claim_all, args=(store_url, issuer, start_at, out))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    try:
        granted = [jti for _ in children for jti in out.get(timeout=120)]
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    assert Counter(granted) == Counter(f"jti-{n}" for n in range(JTIS))


# --- restarts ---------------------------------------------------------------------------------


def test_a_claim_survives_closing_and_reopening_the_store(store_url: str) -> None:
    """A worker restart (the guard disposed, a new one opened) still refuses the jti."""
    issuer = f"https://ehr-{uuid.uuid4()}.example.org"
    first = open_replay_guard(store_url)
    assert first.claim(issuer, "once", time.time() + 600) is True
    first.dispose()
    second = open_replay_guard(store_url)
    try:
        assert second.claim(issuer, "once", time.time() + 600) is False
        assert second.claim(issuer, "other", time.time() + 600) is True
    finally:
        second.dispose()


def test_a_claim_survives_a_restart_of_the_redis_server(redis_server: RedisServer) -> None:
    """With the append-only file on, a restarted Redis still refuses a claimed jti."""
    guard = open_replay_guard(redis_server.url)
    assert guard.claim(ISSUER, "before-restart", time.time() + 600) is True
    guard.dispose()
    redis_server.stop()
    redis_server.start()
    again = open_replay_guard(redis_server.url)
    try:
        assert again.claim(ISSUER, "before-restart", time.time() + 600) is False
    finally:
        again.dispose()


def test_a_claim_survives_a_restart_of_the_postgresql_server(tmp_path: Path) -> None:
    """A clean restart of PostgreSQL keeps the claims (the table is logged, not UNLOGGED)."""
    url = _postgres_url()
    data, binary = os.environ.get("FOOTDROP_PGDATA"), os.environ.get("FOOTDROP_PGBIN")
    if not (data and binary) or os.geteuid() != 0:
        pytest.skip("needs the server of scripts/start-postgres.sh (FOOTDROP_PGDATA) and root")
    issuer = f"https://ehr-{uuid.uuid4()}.example.org"
    guard = open_replay_guard(url)
    assert guard.claim(issuer, "before-restart", time.time() + 600) is True
    guard.dispose()
    pg_ctl = f"{binary}/pg_ctl -D {data} -w -m fast restart -l {data}/server.log"
    subprocess.run(
        ["su", "postgres", "-s", "/bin/sh", "-c", pg_ctl],
        check=True,
        timeout=120,
        capture_output=True,
    )
    again = _open_when_up(lambda: open_replay_guard(url))
    try:
        assert again.claim(issuer, "before-restart", time.time() + 600) is False
    finally:
        again.dispose()


def _open_when_up(opener: Callable[[], object]) -> object:
    deadline = time.monotonic() + 60
    while True:
        try:
            return opener()
        except StartupError:
            assert time.monotonic() < deadline, "PostgreSQL did not come back"
            time.sleep(0.2)


# --- expiry -----------------------------------------------------------------------------------


def test_a_redis_claim_is_forgotten_after_its_expiry(redis_server: RedisServer) -> None:
    """The server drops the pair when the token could no longer be accepted."""
    guard = open_replay_guard(redis_server.url)
    try:
        expires = time.time() + 1.2  # the guard keeps a pair at least a second
        assert guard.claim(ISSUER, "short-lived", expires) is True
        assert guard.claim(ISSUER, "short-lived", expires) is False
        deadline = time.monotonic() + 30
        while not guard.claim(ISSUER, "short-lived", time.time() + 600):
            assert time.monotonic() < deadline, "the pair never expired"
            time.sleep(0.2)
    finally:
        guard.dispose()


def test_sqlite_batches_take_over_expired_rows_and_purge_them(tmp_path: Path) -> None:
    """Through the writer thread: an expired row is claimable again, then purged."""
    import sqlalchemy as sa

    from cds_service.edge.replay_guard import SqlReplayGuard, jwt_replay_table

    now = [1_900_000_000.0]
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'replay.sqlite3'}")
    guard = SqlReplayGuard(engine, clock=lambda: now[0], purge_interval_seconds=60)
    try:
        assert guard.claim(ISSUER, "a", now[0] + 10) is True
        assert guard.claim(ISSUER, "b", now[0] + 10) is True
        now[0] += 10
        assert guard.claim(ISSUER, "a", now[0] + 100) is True  # expired: taken over
        assert guard.claim(ISSUER, "a", now[0] + 100) is False
        now[0] += 61
        guard.claim(ISSUER, "c", now[0] + 100)  # a purge is due: the writer deletes "b"
        with engine.connect() as conn:
            left = sorted(conn.execute(sa.select(jwt_replay_table.c.jti)).scalars())
        assert left == ["a", "c"]
    finally:
        guard.dispose()


# --- operator errors --------------------------------------------------------------------------


def test_redis_without_its_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """CDS_REPLAY_URL=redis://… without the redis package: what to install, in one line."""
    monkeypatch.setitem(sys.modules, "redis", None)  # as if it were not installed
    with pytest.raises(StartupError) as refused:
        open_replay_guard("redis://127.0.0.1:1/0")
    assert "pip install 'footdrop-cds[redis]'" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_unreachable_redis_is_one_line_without_the_password() -> None:
    """A server that does not answer is refused at start-up; the URL's password is not shown."""
    _require_redis()
    with pytest.raises(StartupError) as refused:
        open_replay_guard(f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    message = str(refused.value)
    assert message.startswith("replay store redis://127.0.0.1:")
    assert "s3cret" not in message and "\n" not in message


def test_replay_url_settings_are_read_and_checked() -> None:
    """CDS_REPLAY_URL takes SQLite, PostgreSQL or Redis; the older name still works; not both."""
    from cds_service.config import Settings, SettingsError

    redis_url = "redis://:pw@cache.internal:6379/0"
    assert Settings.from_env({"CDS_REPLAY_URL": redis_url}).replay_url == redis_url
    older = Settings.from_env({"CDS_REPLAY_DATABASE_URL": "sqlite:////tmp/r.sqlite3"})
    assert older.replay_url == "sqlite:////tmp/r.sqlite3"
    both = {"CDS_REPLAY_URL": redis_url, "CDS_REPLAY_DATABASE_URL": "sqlite:////tmp/r.sqlite3"}
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(both)
    with pytest.raises(SettingsError, match="CDS_REPLAY_URL"):
        Settings.from_env({"CDS_REPLAY_URL": "memcached://cache.internal"})
