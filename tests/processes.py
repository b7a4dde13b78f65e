"""Servers the tests start as real processes: wait until they answer, stop their whole group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import requests


def wait_until_healthy(process: subprocess.Popen[bytes], url: str, seconds: float = 90) -> None:
    """Poll ``url`` until it answers 200 (generous deadline: a loaded machine boots slowly)."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.2)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (started with ``start_new_session=True``), then SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
