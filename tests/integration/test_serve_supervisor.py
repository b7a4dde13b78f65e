"""`cds-service serve` as a supervisor of nginx and gunicorn: choosing the proxy, stopping, leaving
nothing behind, and nginx passing Host through so the JWT audience is still right.

Every service is started in its own session and its whole process group is stopped in `finally`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from pytest_httpserver import HTTPServer

from benchmarks.slow_clients import Served, free_port
from tests.integration.serve_support import children_of, processes_in_group, require_nginx

pytestmark = pytest.mark.integration

PRODUCTION = {
    "CDS_ENVIRONMENT": "production",
    "CDS_PUBLIC_URL": "https://cds.example.org",
    "CDS_JWT_ISSUERS": json.dumps({"https://ehr.example.org": "https://ehr.example.org/jwks"}),
    "CDS_CORS_ORIGINS": "https://ehr.example.org",
    "CDS_APP_SECRET": "x" * 40,
}


def _without_nginx(tmp_path: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """An environment whose PATH has only Python's directory and CDS_NGINX naming nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["PATH"] = str(Path(sys.executable).parent)
    env["CDS_NGINX"] = str(tmp_path / "no-nginx" / "nginx")
    env["CDS_DATABASE_URL"] = f"sqlite:///{tmp_path / 'feedback.sqlite3'}"
    env.update(settings)
    return env


def _serve_briefly(env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds_service", "serve", "--port", str(free_port())],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def _one_line(stderr: str) -> str:
    """The one ``cds-service:`` line (gunicorn's own "Starting gunicorn" may precede it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("cds-service:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"CDS_PROXY": "nginx"}, "CDS_PROXY=nginx but nginx not found"),
        (PRODUCTION, "production needs nginx in front of gunicorn"),
    ],
    ids=["CDS_PROXY=nginx", "production"],
)
def test_without_nginx_a_required_proxy_is_one_line_and_exit_2(
    tmp_path: Path, settings: dict[str, str], expected: str
) -> None:
    """nginx required (CDS_PROXY=nginx, or production with auto) and missing: refused, one line."""
    done = _serve_briefly(_without_nginx(tmp_path, settings), tmp_path)
    assert done.returncode == 2
    line = _one_line(done.stderr)
    assert line.startswith("cds-service: ") and expected in line, line
    assert "apt-get install nginx" in line


@pytest.mark.parametrize(
    ("settings", "warned"),
    [({}, True), ({"CDS_PROXY": "off"}, False), ({**PRODUCTION, "CDS_PROXY": "off"}, False)],
    ids=["auto", "off", "production-off"],
)
def test_without_nginx_auto_warns_once_and_gunicorn_serves(
    tmp_path: Path, settings: dict[str, str], warned: bool
) -> None:
    """auto without nginx: one line says protection is off, gunicorn serves HOST:PORT itself."""
    env = _without_nginx(tmp_path, settings)
    server = Served(
        {k: v for k, v in env.items() if k.startswith("CDS_")}, tmp_path / "serve.log", tmp_path
    )
    server.env["PATH"] = env["PATH"]
    with server:
        response = requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
        assert response.status_code == 200
        assert response.headers.get("Server", "").lower() != "nginx"
        log = server.tail(100_000)
    notices = [line for line in log.splitlines() if "slow-client protection is off" in line]
    assert len(notices) == (1 if warned else 0), log
    if warned:
        assert notices[0].startswith("cds-service: nginx not found")
        assert "apt-get install nginx" in notices[0]
    assert "Traceback" not in log


def _start(env: Mapping[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "cds_service", "serve"],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready after 90 s: {log.read_text()[-3000:]}")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Whatever is left of the test's process group: SIGTERM, SIGKILL after 30 s; leader reaped."""
    for signo in (signal.SIGTERM, signal.SIGKILL):
        if not processes_in_group(process.pid):
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signo)
        if process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        _wait_gone(process.pid, 30)
    if process.poll() is None:
        process.wait(timeout=30)


def _wait_gone(pgid: int, seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    while (left := processes_in_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def nginx_env(tmp_path: Path) -> dict[str, str]:
    require_nginx()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "WEB_CONCURRENCY": "2",
            "CDS_PROXY": "nginx",
            "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'feedback.sqlite3'}",
        }
    )
    return env


def _runtime_dir(supervisor: int) -> Path:
    gunicorn = next(c for c in children_of(supervisor).values() if "gunicorn" in c)
    socket_path = gunicorn.split("--bind unix:", 1)[1].split()[0]
    return Path(socket_path).parent


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_nginx_and_gunicorn_and_leaves_nothing(
    nginx_env: dict[str, str], tmp_path: Path, signo: int
) -> None:
    """SIGTERM (or SIGINT) to the supervisor alone: exit 0, no process of the group left, the
    runtime directory removed."""
    log = tmp_path / "serve.log"
    process = _start(nginx_env, tmp_path, log)
    try:
        _wait_ready(process, int(nginx_env["PORT"]), log)
        group = processes_in_group(process.pid)
        commands = " | ".join(group.values())
        assert "nginx: master process" in commands and "nginx: worker process" in commands
        assert commands.count("gunicorn") >= 3  # the master and two workers
        runtime = _runtime_dir(process.pid)
        assert (runtime / "nginx.conf").is_file() and (runtime / "gunicorn.sock").exists()
        assert oct(runtime.stat().st_mode & 0o777) == oct(0o700)

        os.kill(process.pid, signo)
        assert process.wait(timeout=60) == 0
        assert _wait_gone(process.pid, 10) == {}
        assert not runtime.exists()
        assert "Traceback" not in log.read_text()
    finally:
        _stop_group(process)


@pytest.mark.parametrize("victim", ["gunicorn", "nginx"])
def test_when_one_side_dies_the_other_is_stopped(
    nginx_env: dict[str, str], tmp_path: Path, victim: str
) -> None:
    """gunicorn's or nginx's master killed: the supervisor stops the other, says so, exits 1."""
    log = tmp_path / "serve.log"
    process = _start(nginx_env, tmp_path, log)
    try:
        _wait_ready(process, int(nginx_env["PORT"]), log)
        runtime = _runtime_dir(process.pid)
        pid = next(p for p, c in children_of(process.pid).items() if victim in c)
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=60) == 128 + signal.SIGKILL
        assert _wait_gone(process.pid, 10) == {}
        assert not runtime.exists()
        assert f"cds-service: {victim} was killed by SIGKILL" in log.read_text()
    finally:
        _stop_group(process)


def test_when_the_supervisor_is_killed_its_children_stop(
    nginx_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL to the supervisor (nothing can be forwarded): nginx and gunicorn still stop."""
    log = tmp_path / "serve.log"
    process = _start(nginx_env, tmp_path, log)
    runtime = None
    try:
        _wait_ready(process, int(nginx_env["PORT"]), log)
        runtime = _runtime_dir(process.pid)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert _wait_gone(process.pid, 60) == {}
    finally:
        _stop_group(process)
        if runtime is not None:  # nobody was left to remove it
            shutil.rmtree(runtime, ignore_errors=True)


def test_the_gunicorn_master_preflight_still_refuses_in_one_line(
    nginx_env: dict[str, str], tmp_path: Path
) -> None:
    """An unusable database under `serve` with nginx: one line, exit 2, nginx never started."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = {**nginx_env, "CDS_DATABASE_URL": f"sqlite:///{blocker}/db.sqlite3"}
    done = _serve_briefly(env, tmp_path)
    assert done.returncode == 2
    assert "database sqlite:///" in _one_line(done.stderr)


def test_a_port_in_use_is_one_line(nginx_env: dict[str, str], tmp_path: Path) -> None:
    """The port is taken: one line before anything starts."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "cds_service", "serve", "--port", str(port)],
            env=nginx_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in _one_line(done.stderr)


# --- Host and scheme through nginx: the JWT audience ------------------------------------------


def _token(key: ec.EllipticCurvePrivateKey, audience: str) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://ehr.example.org",
        "aud": audience,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": "k1", "typ": "JWT"})


def test_host_reaches_the_app_unchanged_and_the_scheme_cannot_be_forged(
    nginx_env: dict[str, str], tmp_path: Path, httpserver: HTTPServer
) -> None:
    """With CDS_PUBLIC_URL unset the audience is built from Host: nginx passes it as sent, and
    a client's X-Forwarded-Proto/-Ssl cannot turn http into https."""
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "k1", "alg": "ES384"}
    httpserver.expect_request("/jwks").respond_with_json({"keys": [jwk]})
    env = {
        **nginx_env,
        "CDS_AUTH": "on",
        "CDS_JWT_ISSUERS": json.dumps({"https://ehr.example.org": httpserver.url_for("/jwks")}),
    }
    log = tmp_path / "serve.log"
    process = _start(env, tmp_path, log)
    try:
        port = int(env["PORT"])
        _wait_ready(process, port, log)
        url = f"http://127.0.0.1:{port}/cds-services/footdrop-im-injection/feedback"
        host = "cds.example.org:4443"
        feedback = {"feedback": []}

        def post(audience: str, **headers: str) -> int:
            token = _token(key, audience)
            sent = {"Host": host, "Authorization": f"Bearer {token}", **headers}
            return requests.post(url, json=feedback, headers=sent, timeout=10).status_code

        path = "/cds-services/footdrop-im-injection/feedback"
        assert post(f"http://{host}{path}") not in (401, 403)
        forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on"}
        assert post(f"https://{host}{path}", **forged) == 401
        assert post(f"http://other.example.org{path}") == 401
    finally:
        _stop_group(process)
