"""`cds-service serve` in tests: is nginx here, and the processes of a running service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cds_service.proxy import find_nginx


def require_nginx() -> str:
    """The nginx binary; skipped without it, failed when FOOTDROP_REQUIRE_NGINX=1 (CI)."""
    nginx = find_nginx("nginx")
    if nginx is None:
        if os.environ.get("FOOTDROP_REQUIRE_NGINX") == "1":
            pytest.fail("FOOTDROP_REQUIRE_NGINX=1 but nginx is not installed")
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    return nginx


def processes_in_group(pgid: int) -> dict[int, str]:
    """Every live (non-zombie) process whose process group is ``pgid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            found[int(entry.name)] = command
    return found


def children_of(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = command
    return found
