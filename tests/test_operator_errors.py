"""Every operator mistake is one line on stderr and a non-zero exit, never a traceback.

Each case runs the real command (``python -m cds_service`` or gunicorn with the shipped config) in a
fresh process, the way an operator would meet it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.processes import free_port

LOOPBACK_JWKS = {"https://ehr.example": "https://ehr.example/jwks.json"}


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    done = subprocess.run(
        args, env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stderr


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("cds-service:")]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cds_service", *args]


@pytest.fixture
def broken_cards(tmp_path: Path) -> Path:
    """A copy of the shipped cards/ with a YAML syntax error in card.yaml."""
    target = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", target)
    with (target / "card.yaml").open("a", encoding="utf-8") as handle:
        handle.write("broken: [\n")
    return target


CASES = {
    "nonsense database URL": ({"CDS_DATABASE_URL": "nonsense"}, "not a database URL"),
    "unsupported database": ({"CDS_DATABASE_URL": "mysql://db/cds"}, "'mysql' is not supported"),
    "unsupported SQLite driver": (
        {"CDS_DATABASE_URL": "sqlite+aiosqlite:///x.db"},
        "not supported",
    ),
    "missing content dir": ({"CDS_CONTENT_DIR": "/nonexistent/cards"}, "is not a directory"),
    "HS256 with auth on": (
        {
            "CDS_AUTH": "on",
            "CDS_JWT_ISSUERS": json.dumps(LOOPBACK_JWKS),
            "CDS_JWT_ALGORITHMS": "HS256",
        },
        "CDS_JWT_ALGORITHMS: symmetric algorithm 'HS256' refused",
    ),
    "alg none": (
        {
            "CDS_AUTH": "on",
            "CDS_JWT_ISSUERS": json.dumps(LOOPBACK_JWKS),
            "CDS_JWT_ALGORITHMS": "none",
        },
        "'none' is never allowed",
    ),
    "http JWKS": (
        {"CDS_AUTH": "on", "CDS_JWT_ISSUERS": json.dumps({"https://e": "http://e.example/jwks"})},
        "must use https",
    ),
    "unknown setting": ({"CDS_DATABSE_URL": "sqlite://"}, "unknown setting(s): CDS_DATABSE_URL"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_setting_is_one_line(case: str, tmp_path: Path) -> None:
    """A malformed or unusable CDS_* setting stops every command with one line naming it."""
    env, message = CASES[case]
    code, stderr = _run(_cli("feedback-report"), env, tmp_path)
    assert code == 2
    assert message in _one_line(stderr)


def test_production_reports_every_refusal_at_once(tmp_path: Path) -> None:
    """Production with several insecure settings names all of them in its one line."""
    env = {
        "CDS_ENVIRONMENT": "production",
        "CDS_AUTH": "off",
        "CDS_ALLOW_INSECURE_FHIR": "on",
        "CDS_PUBLIC_URL": "http://cds.example.org",
        "CDS_JWT_LEEWAY_SECONDS": "many",
    }
    code, stderr = _run(_cli("call", "patient-view-foot-drop"), env, tmp_path)
    line = _one_line(stderr)
    assert code == 2
    for part in ("CDS_AUTH must be on", "CDS_ALLOW_INSECURE_FHIR", "https URL", "whole number"):
        assert part in line


def test_tools_run_in_production_without_its_secrets(tmp_path: Path) -> None:
    """check-content and --version need no production settings; a malformed value still fails."""
    env = {"CDS_ENVIRONMENT": "production"}
    code, stderr = _run(_cli("check-content"), env, tmp_path)
    assert (code, stderr) == (0, "")
    code, _ = _run(_cli("--version"), env, tmp_path)
    assert code == 0
    code, stderr = _run(_cli("check-content"), {**env, "CDS_JWT_LEEWAY_SECONDS": "many"}, tmp_path)
    assert code == 2 and "whole number" in _one_line(stderr)


def test_postgres_url_without_its_driver_names_the_extra(tmp_path: Path) -> None:
    """A PostgreSQL URL without psycopg installed names the extra to install."""
    stub = tmp_path / "stub"
    stub.mkdir()
    # A module that fails to import stands in for the missing driver in this process only.
    (stub / "sitecustomize.py").write_text(
        "import sys\nsys.modules['psycopg'] = None\n", encoding="utf-8"
    )
    env = {
        "CDS_DATABASE_URL": "postgresql://cds@127.0.0.1/cds",
        "PYTHONPATH": f"{stub}{os.pathsep}{ROOT}",
    }
    code, stderr = _run(_cli("feedback-report"), env, tmp_path)
    assert code == 2
    assert "pip install 'footdrop-cds[postgres]'" in _one_line(stderr)


def test_unusable_database_path_is_one_line(tmp_path: Path) -> None:
    """feedback-report on a database path that cannot be created says so in one line."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {"CDS_DATABASE_URL": f"sqlite:///{blocker}/feedback.sqlite3"}
    code, stderr = _run(_cli("feedback-report"), env, tmp_path)
    assert code == 2
    assert "database sqlite:///" in _one_line(stderr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe{not utf-8", "is not UTF-8 text"),
        (b'{"hook": ', "is not JSON"),
    ],
)
def test_call_with_an_unreadable_request_is_one_line(
    content: bytes, message: str, tmp_path: Path
) -> None:
    """`call` on a file that is not UTF-8 JSON names the file and the problem."""
    path = tmp_path / "request.json"
    path.write_bytes(content)
    code, stderr = _run(_cli("call", str(path)), {}, tmp_path)
    assert code == 2
    assert message in _one_line(stderr)


def test_call_with_a_missing_file_lists_the_bundled_examples(tmp_path: Path) -> None:
    """`call` on a path that does not exist says so and lists the bundled examples."""
    code, stderr = _run(_cli("call", "no-such.json"), {}, tmp_path)
    assert code == 2
    assert "patient-view-foot-drop" in _one_line(stderr)


@pytest.mark.parametrize("mistake", ["broken content", "unusable database"])
def test_gunicorn_refuses_to_start_with_one_line(
    mistake: str, broken_cards: Path, tmp_path: Path
) -> None:
    """Under gunicorn a content or database mistake stops the master with one line, exit 2."""
    env = {"PORT": str(free_port()), "WEB_CONCURRENCY": "1"}
    if mistake == "broken content":
        env["CDS_CONTENT_DIR"] = str(broken_cards)
        expected = "card.yaml"
    else:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        env["CDS_DATABASE_URL"] = f"sqlite:///{blocker}/db.sqlite3"
        expected = "database sqlite:///"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:cds_service.gunicorn_conf",
        "cds_service:create_app()",
    ]
    code, stderr = _run(command, env, tmp_path)
    assert code == 2
    assert expected in _one_line(stderr)


def test_version_is_printed(tmp_path: Path) -> None:
    """`cds-service --version` and `python -m cds_service --version` print the package version."""
    from cds_service import __version__

    done = subprocess.run(
        _cli("--version"), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"footdrop-cds {__version__}"
    assert __version__ != "0.0.0"


@pytest.mark.parametrize(
    ("database_url", "installs_driver"),
    [("postgresql://cds@db.example/cds", True), ("sqlite:///var/feedback.sqlite3", False)],
)
def test_make_serve_installs_the_postgres_driver_only_when_needed(
    database_url: str, installs_driver: bool
) -> None:
    """`make serve` installs the `postgres` extra exactly when CDS_DATABASE_URL names PostgreSQL."""
    make = shutil.which("make")
    assert make is not None
    env = {**os.environ, "CDS_DATABASE_URL": database_url}
    done = subprocess.run(
        [make, "-n", "-B", "serve"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert ("'.[postgres]'" in done.stdout) is installs_driver
    assert "cds-service serve" in done.stdout
