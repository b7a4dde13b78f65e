"""Issue 13 item 7: `make bench` changes nothing it was not asked to.

Results go to an untracked file (var/ is ignored by git); only ``--record`` touches BENCHMARKS.md,
and then only its own section; wrk is looked up, never installed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks import load
from benchmarks.tail import RESULTS, ROOT, SECTION
from benchmarks.tail_report import record


def test_results_go_to_an_ignored_file() -> None:
    relative = RESULTS.relative_to(ROOT)
    assert relative.parts[0] == "var"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(relative)], cwd=ROOT, capture_output=True
    )
    assert ignored.returncode == 0, f"{relative} is not ignored by git"


def test_record_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nIntro.\n\n## Start-up\n\nkept\n", "utf-8")
    record(f"{SECTION}\n\nfirst\n", path)
    text = path.read_text("utf-8")
    assert text.index(SECTION) < text.index("## Start-up") and "first" in text
    record(f"{SECTION}\n\nsecond\n", path)
    text = path.read_text("utf-8")
    assert "second" in text and "first" not in text
    assert text.count(SECTION) == 1
    assert "Intro." in text and "## Start-up\n\nkept\n" in text


def test_wrk_is_looked_up_never_installed(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert load.find_wrk() is None
    assert "apt-get install wrk" in load.WRK_HINT
