"""`cds-service call --explain`: the rule trace for informaticists, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PV = ROOT / "fixtures" / "patient-view"


def run(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CDS_PUBLIC_URL"}
    environment.update(CDS_DATABASE_URL=f"sqlite:///{tmp_path / 'f.sqlite3'}", **env)
    return subprocess.run(
        [sys.executable, "-m", "cds_service", "call", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=environment,
    )


def test_explain_prints_the_card_and_every_section_of_the_trace(tmp_path: Path) -> None:
    """The classic case: the short card, the steps, the red flags checked, the moved sentences,
    the plan and the milestones, as text."""
    result = run("--explain", str(PV / "01-classic-left-dorsogluteal.json"), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Outcome: attribution, warning card" in out
    assert "summary: Left foot drop" in out and "EMG/NCS from 2025-07-02" in out
    assert "R4      Time window: immediate" in out
    assert "R7d Bilateral deficit: no" in out
    moved = out.split("Moved from the card to the page (R9a)", 1)[1].split("\n\n", 1)[0]
    assert "short head of biceps femoris" in moved
    assert "2025-07-02; label: EMG/NCS from day 21" in out.replace("start: ", "")
    assert "Timeline (anchor 2025-06-11, today 2025-06-13)" in out
    assert "Traceback" not in result.stderr


def test_explain_json_is_the_trace_with_the_cards(tmp_path: Path) -> None:
    """--json: cards and trace as JSON; a red-flag case holds every routine order."""
    result = run(
        "--explain", "--json", str(PV / "16-bilateral-footdrop-red-flag.json"), tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    trace = document["trace"]
    assert trace["outcome"]["kind"] == "red_flag"
    assert document["cards"][0]["indicator"] == "critical"
    assert {f["pathway"] for f in trace["red_flags"] if f["fired"]} == {"R7d", "R7e"}
    assert {p["status"] for p in trace["plan"] if p["order"] == "AFO"} == {"held"}


def test_explain_with_public_url_shows_the_smart_link(tmp_path: Path) -> None:
    """With CDS_PUBLIC_URL the card carries the app link, exactly as the service would send it."""
    result = run(
        "--explain",
        "--json",
        str(PV / "01-classic-left-dorsogluteal.json"),
        tmp_path=tmp_path,
        CDS_PUBLIC_URL="https://cds.example.org",
    )
    assert result.returncode == 0, result.stderr
    (link,) = json.loads(result.stdout)["cards"][0]["links"]
    assert link["url"] == "https://cds.example.org/app/launch" and link["type"] == "smart"


def test_explain_refuses_other_hooks_in_one_line(tmp_path: Path) -> None:
    """An order-sign request is an operator mistake: one line, exit 2, no traceback."""
    order_sign = next((ROOT / "fixtures" / "order-sign").glob("01-*.json"))
    result = run("--explain", str(order_sign), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("cds-service: call --explain:")
    assert len(result.stderr.strip().splitlines()) == 1
    bare = run("--json", str(PV / "01-classic-left-dorsogluteal.json"), tmp_path=tmp_path)
    assert bare.returncode == 2 and "--json needs --explain" in bare.stderr
