"""The Dockerfile's contract, checked without a container engine (none on this machine).

The image's steps are replayed in a fresh virtualenv: dependencies from requirements.lock with
--require-hashes, then the service's wheel with --no-deps; then `cds-service --version` and
`check-content` run with the image's ENV and no production secrets. What this cannot check:
the base image, apt's nginx, the non-root user and the VOLUME itself (a container engine would).
"""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.test_wheel import _copy_source

LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "Dockerfile"


def _runtime_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    stage = text.split("AS runtime", 1)[1]
    env: dict[str, str] = {}
    for line in stage.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[-1], p.removeprefix("**/"))
        for p in patterns
    )


def test_dockerignore_keeps_the_context_small_and_the_sources_in():
    """.venv, var/, test-artifacts/, .git and caches stay out; what the Dockerfile copies is in."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for big in (
        ".venv",
        ".venv-3.12",
        "var",
        "test-artifacts",
        ".git",
        ".mypy_cache",
        ".pytest_cache",
        "cds_service/__pycache__",
        "node_modules",
    ):
        assert _ignored(big, patterns), big
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE.read_text(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert not _ignored(source, patterns), source
            assert (ROOT / source).exists(), source


def test_lock_pins_every_runtime_dependency_with_hashes():
    """requirements.lock (make lock) pins each runtime, postgres and codes dependency, hashed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    wanted += project["optional-dependencies"]["postgres"]
    wanted += project["optional-dependencies"]["codes"]
    lock = LOCK.read_text()
    pinned = {
        m.group(1).lower().replace("_", "-")
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==\S+", lock, re.MULTILINE)
    }
    for requirement in wanted:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not in requirements.lock: run `make lock`"
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in e for e in entries if "==" in e)
    dockerfile = DOCKERFILE.read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "pip install --no-deps /tmp/wheels/*.whl" in dockerfile
    assert "VOLUME /var/lib/footdrop-cds" in dockerfile
    assert _runtime_env()["CDS_DATABASE_URL"] == "sqlite:////var/lib/footdrop-cds/feedback.sqlite3"


def test_image_steps_in_a_fresh_venv(tmp_path: Path):
    """Lock with hashes, wheel without deps, then --version and check-content as in the image."""
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)  # this pip installs into it (--python): no ensurepip
    python = target / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    # The image's first RUN: only what the lock names, every file checked against its hash.
    subprocess.run(
        [*pip, "install", "-q", "--no-compile", "--require-hashes", "--no-deps", "-r", str(LOCK)],
        check=True,
        timeout=600,
    )
    # The image's second RUN: the wheel (built from a copy, as from the image's build context).
    wheels = tmp_path / "wheels"
    source = _copy_source(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(source)],
        check=True,
        timeout=300,
    )
    [wheel] = wheels.glob("*.whl")
    subprocess.run([*pip, "install", "--quiet", "--no-deps", str(wheel)], check=True, timeout=300)
    # Every dependency the wheel declares is satisfied by the lock alone.
    checked = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS"))}
    env.update(_runtime_env())
    env["PATH"] = f"{target / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp_path)
    assert env["CDS_ENVIRONMENT"] == "production"
    version = subprocess.run(
        ["cds-service", "--version"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert version.returncode == 0 and version.stdout.startswith("footdrop-cds "), version.stderr
    check = subprocess.run(
        ["cds-service", "check-content"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "content OK" in check.stdout
    assert str(target) in check.stdout  # the installed package's cards, not the checkout's
