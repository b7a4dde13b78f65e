"""How many CPUs this process may really use: its affinity mask and its cgroup v2 CPU quota.

``os.cpu_count()`` is the host's count; in a container limited to 2 CPUs on a 64-core host it
would start 64 workers that share 2 CPUs' worth of time. Pure parsing here, file reading apart.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cpus(cpu_max: str | None) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"max 100000"`` or ``"150000 100000"``).

    None when there is no limit or the text is not understood (then the quota is ignored).
    """
    if not cpu_max:
        return None
    parts = cpu_max.split()
    if len(parts) not in (1, 2) or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) == 2 else 100_000
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def available_cpus(affinity: int, cpu_max: str | None) -> int:
    """Whole CPUs usable: the affinity count, capped by the quota rounded up; at least 1."""
    cpus = max(1, affinity)
    quota = quota_cpus(cpu_max)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """This process's cgroup v2 path from ``/proc/self/cgroup`` (the ``0::/path`` line)."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def read_cpu_max(root: Path = CGROUP_ROOT) -> str | None:
    """The tightest ``cpu.max`` from this process's cgroup up to the root (None: none readable)."""
    try:
        path = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError:
        path = None
    tightest: tuple[float, str] | None = None
    candidates = [root]
    if path and path != "/":
        parts = Path(path.lstrip("/")).parts
        candidates += [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]
    for directory in candidates:
        try:
            text = (directory / "cpu.max").read_text().strip()
        except OSError:
            continue
        quota = quota_cpus(text)
        if quota is not None and (tightest is None or quota < tightest[0]):
            tightest = (quota, text)
    return tightest[1] if tightest else None


def cpus_available() -> int:
    """CPUs this process may use now (affinity and cgroup quota)."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return available_cpus(affinity or os.cpu_count() or 1, read_cpu_max())
