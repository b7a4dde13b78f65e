"""nginx in front of gunicorn, without running it: CDS_PROXY, finding nginx, the rendered config.

The processes themselves are tested in tests/integration/test_serve_supervisor.py and
tests/integration/test_slow_clients.py.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cds_service.config import Settings, SettingsError
from cds_service.errors import OperatorError
from cds_service.proxy import (
    NginxLayout,
    choose_proxy,
    find_nginx,
    listen_address,
    render_nginx_conf,
)


def _fake_nginx(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "nginx"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_proxy_settings_have_defaults_and_are_checked() -> None:
    settings = Settings.from_env({})
    assert (settings.proxy, settings.nginx, settings.client_timeout_seconds) == (
        "auto",
        "nginx",
        10.0,
    )
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CDS_PROXY": "apache", "CDS_CLIENT_TIMEOUT_SECONDS": "0"})
    message = str(caught.value)
    assert "CDS_PROXY must be auto or nginx or off" in message
    assert "CDS_CLIENT_TIMEOUT_SECONDS must be between 0 and 60 seconds" in message


def test_find_nginx_takes_a_path_as_given_and_a_name_on_path(tmp_path: Path) -> None:
    binary = _fake_nginx(tmp_path / "bin")
    assert find_nginx(str(binary)) == str(binary)
    assert find_nginx(str(tmp_path / "missing" / "nginx")) is None
    assert find_nginx("nginx", path=str(tmp_path / "bin")) == str(binary)


def test_choose_proxy(tmp_path: Path) -> None:
    binary = _fake_nginx(tmp_path / "bin")
    missing = str(tmp_path / "missing" / "nginx")

    def settings(**env: str) -> Settings:
        return Settings.from_env({f"CDS_{k.upper()}": v for k, v in env.items()})

    assert choose_proxy(settings(nginx=str(binary))).nginx == str(binary)
    assert choose_proxy(settings(nginx=str(binary), proxy="off")).nginx is None
    auto = choose_proxy(settings(nginx=missing))
    assert auto.nginx is None and auto.notice is not None
    assert "slow-client protection is off" in auto.notice and "\n" not in auto.notice
    with pytest.raises(OperatorError, match="CDS_PROXY=nginx but nginx not found"):
        choose_proxy(settings(nginx=missing, proxy="nginx"))
    production = Settings(environment="production", nginx=missing)
    with pytest.raises(OperatorError, match="production needs nginx"):
        choose_proxy(production)
    off = choose_proxy(Settings(environment="production", nginx=missing, proxy="off"))
    assert off.nginx is None and off.notice is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", "127.0.0.1:8080"), ("0.0.0.0", "0.0.0.0:8080"), ("::", "[::]:8080")],
)
def test_listen_address(host: str, expected: str) -> None:
    assert listen_address(host, 8080) == expected


def test_rendered_config_keeps_everything_in_the_runtime_dir(tmp_path: Path) -> None:
    settings = Settings(max_body_bytes=123456, client_timeout_seconds=7.5)
    layout = NginxLayout(
        listen="127.0.0.1:8080",
        upstreams=[f"unix:{tmp_path}/a.sock", f"unix:{tmp_path}/b.sock"],
        runtime_dir=tmp_path,
    )
    conf = render_nginx_conf(settings, layout)
    for directive in (
        "client_header_timeout 7.5s;",
        "client_body_timeout 7.5s;",
        "client_max_body_size 123456;",
        "proxy_request_buffering on;",
        "proxy_buffering on;",
        "server_tokens off;",
        "access_log off;",
        "error_log stderr",
        "daemon off;",
        f"pid {tmp_path}/nginx.pid;",
        "listen 127.0.0.1:8080",
        f"server unix:{tmp_path}/a.sock;",
        f"server unix:{tmp_path}/b.sock;",
        "proxy_set_header Host $cds_host;",
        'proxy_set_header X-Forwarded-Ssl "";',
    ):
        assert directive in conf, directive
    # No upstream keep-alive: each request is balanced anew over the gunicorn workers.
    upstream = conf.split("upstream cds_gunicorn {", 1)[1].split("}", 1)[0]
    assert "keepalive" not in upstream
    # Every path nginx writes to is in the runtime directory (nginx runs unprivileged).
    for line in conf.splitlines():
        if "_temp_path" in line or line.startswith("pid"):
            assert str(tmp_path) in line, line
    assert "user " not in conf  # only when started as root
    as_root = render_nginx_conf(
        settings, NginxLayout("x:1", ["unix:/s"], tmp_path, user=("r", "g"))
    )
    assert as_root.splitlines()[1] == "user r g;"


@pytest.mark.skipif(find_nginx("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_rendered_config(tmp_path: Path) -> None:
    """`nginx -t` on the config as `serve` renders it."""
    import subprocess

    nginx = find_nginx("nginx")
    assert nginx is not None
    user = None
    if os.geteuid() == 0:
        user = ("root", "root")
    layout = NginxLayout("127.0.0.1:8080", [f"unix:{tmp_path}/g.sock"], tmp_path, user=user)
    (tmp_path / "nginx.conf").write_text(render_nginx_conf(Settings(), layout))
    done = subprocess.run(
        [
            nginx,
            "-t",
            "-q",
            "-e",
            "stderr",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
