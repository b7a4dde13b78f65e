"""The built wheel works outside the checkout: content, examples, CLI and a served /healthz.

The wheel is built from a copy of the source tree, installed into a fresh virtual environment in a
temporary directory (its dependencies from the package index), and run from another directory, so
nothing can be found by accident in the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.processes import free_port, stop_group, wait_until_healthy

pytestmark = pytest.mark.integration

_SKIP = {".venv", ".git", "var", "build", "dist", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def _copy_source(target: Path) -> Path:
    def ignore(_directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in _SKIP or n.startswith(".venv")}
        return skipped | {n for n in names if n.endswith(".egg-info") or n == "__pycache__"}

    shutil.copytree(ROOT, target, symlinks=True, ignore=ignore)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv (outside the repository) with only the built wheel and its dependencies."""
    base = tmp_path_factory.mktemp("wheel")
    source = _copy_source(base / "src")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = dist.glob("footdrop_cds-*.whl")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    yield env_dir


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PYTHON"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
    )
    env["HOME"] = str(workdir)
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working directory far from the repository."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def test_the_wheel_carries_the_content_and_checks_it(installed: Path, workdir: Path) -> None:
    """`cds-service check-content` in the installed wheel finds and accepts the bundled cards/."""
    done = subprocess.run(
        [str(installed / "bin" / "cds-service"), "check-content"],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "content OK" in done.stdout
    assert "site-packages" in done.stdout  # the content read is the installed copy
    assert str(ROOT) not in done.stdout


def test_the_wheel_calls_a_bundled_example(installed: Path, workdir: Path) -> None:
    """`python -m cds_service call <example>` answers with a card and writes nothing to the cwd."""
    done = subprocess.run(
        [str(installed / "bin" / "python"), "-m", "cds_service", "call", "patient-view-foot-drop"],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"cards"' in done.stdout and "foot drop" in done.stdout.lower()
    assert "Traceback" not in done.stderr
    assert list(workdir.iterdir()) == []


def test_the_wheel_serves_healthz_with_its_database_in_the_working_directory(
    installed: Path, workdir: Path
) -> None:
    """The installed `cds-service serve` answers /healthz; SQLite is in ./var, not site-packages."""
    port = free_port()
    env = {**_env(workdir), "PORT": str(port), "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "2"}
    server = subprocess.Popen(
        [str(installed / "bin" / "cds-service"), "serve"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until_healthy(server, f"http://127.0.0.1:{port}/healthz")
        assert (workdir / "var" / "feedback.sqlite3").is_file()
        # The development page's templates, stylesheet and demo patients ship in the wheel.
        base = f"http://127.0.0.1:{port}"
        page = requests.get(f"{base}/?demo=foot-drop-after-gluteal-injection", timeout=30)
        assert page.status_code == 200 and 'class="card card-warning"' in page.text
        assert requests.get(f"{base}/devpage-static/devpage.css", timeout=30).status_code == 200
        site = next((installed / "lib").glob("python3*/site-packages"))
        assert not (site / "var").exists()
    finally:
        stop_group(server)
        assert server.stderr is not None
        server.stderr.close()
