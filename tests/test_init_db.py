"""`cds-service init-db`: the one-shot schema step of compose's `migrate` and the Kubernetes init
container (several at once on PostgreSQL: tests/integration/test_three_instances.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from cds_service.cli import main


def test_init_db_creates_both_stores_and_can_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "data" / "feedback.sqlite3"
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{database}")
    assert main(["init-db"]) == 0
    assert main(["init-db"]) == 0  # idempotent: the tables are there already
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"feedback store ready: sqlite:///{database}",
        f"replay store ready: sqlite:///{database.with_name('feedback-replay.sqlite3')}",
    ]
    feedback = create_engine(f"sqlite:///{database}")
    replay = create_engine(f"sqlite:///{database.with_name('feedback-replay.sqlite3')}")
    try:
        assert {"feedback", "feedback_accepted_suggestion"} <= set(
            inspect(feedback).get_table_names()
        )
        assert "jwt_replay" in inspect(replay).get_table_names()
    finally:
        feedback.dispose()
        replay.dispose()


def test_init_db_on_an_unusable_database_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{blocker}/feedback.sqlite3")
    assert main(["init-db"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("cds-service: database sqlite:///")
