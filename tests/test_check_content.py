"""`cds-service check-content` runs every content check the tests run, and says what it skipped.

Structure, templates and thresholds (load_content), discovery (load_services), SNOMED CT check
digit and partition, ICD-10-CM against the CMS table when the ``codes`` extra is installed. A YAML
syntax error is reported alone; any problem exits 1.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cds_service import cli
from cds_service.domain.code_checks import sctid_problem
from cds_service.edge.code_checks import ICD_NOT_CHECKED, check_content, icd10cm_table
from tests.conftest import ROOT

needs_icd_table = pytest.mark.skipif(
    icd10cm_table() is None, reason="simple_icd_10_cm (footdrop-cds[codes]) not installed"
)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), "utf-8")


@pytest.fixture
def cards(tmp_path: Path) -> Path:
    """A private copy of the shipped cards/ to break."""
    target = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", target)
    return target


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[[Path], tuple[int, list[str]]]:
    """`cds-service check-content DIR` in-process: exit status and output lines."""

    def run(directory: Path) -> tuple[int, list[str]]:
        status = cli.main(["check-content", str(directory)])
        return status, capsys.readouterr().out.splitlines()

    return run


def _problems(lines: list[str]) -> list[str]:
    return [line.removeprefix("  - ") for line in lines if line.startswith("  - ")]


def _partition_typo() -> str:
    """A SNOMED CT id with a correct check digit but partition 01 (a description id)."""
    candidates = [f"607701{digit}" for digit in "0123456789"]
    return next(c for c in candidates if "Verhoeff" not in (sctid_problem(c) or ""))


def test_the_shipped_content_passes(run):
    """cards/ as shipped: exit 0, "content OK", and the notes say what was checked."""
    status, lines = run(ROOT / "cards")
    assert status == 0, lines
    assert "content OK (3 service(s))" in lines[0]
    assert any("SNOMED CT id(s) checked" in line for line in lines)
    if icd10cm_table() is not None:
        assert any("ICD-10-CM code(s) checked against the CMS table" in line for line in lines)


def test_a_snomed_typo_failing_the_check_digit_is_a_problem(cards, run):
    """One wrong digit in a value-set SNOMED CT id fails the Verhoeff check: reported, exit 1."""
    _edit(cards / "valuesets.yaml", 'code: "6077001"', 'code: "6077002"')
    status, lines = run(cards)
    assert status == 1
    problems = _problems(lines)
    assert problems and all("'6077002' fails the Verhoeff check digit" in p for p in problems)
    assert problems[0].startswith("valuesets.yaml: footdrop-trigger[")


def test_a_snomed_id_with_a_wrong_partition_is_a_problem(cards, run):
    """A check-digit-valid id whose partition is not a concept's (00, 10) is reported."""
    code = _partition_typo()
    _edit(cards / "valuesets.yaml", 'code: "6077001"', f'code: "{code}"')
    status, lines = run(cards)
    assert status == 1
    assert any(f"{code!r} has partition identifier '01'" in p for p in _problems(lines)), lines


def test_snomed_codes_outside_the_value_sets_are_checked(cards, run):
    """Order codes (orders.yaml) and prefetch query codes (services.yaml) are checked too."""
    _edit(cards / "orders.yaml", 'code: "306170007"', 'code: "306170017"')
    _edit(
        cards / "services.yaml", "http://snomed.info/sct|6077001", "http://snomed.info/sct|6077011"
    )
    status, lines = run(cards)
    problems = _problems(lines)
    assert status == 1
    assert any(p.startswith("orders.yaml: PT_REFERRAL.code: ") for p in problems), problems
    assert any(p.startswith("services.yaml: ") and "'6077011'" in p for p in problems), problems


def test_rejected_snomed_entries_are_not_checked(cards):
    """UNVERIFIED / REJECTED entries are documentation (some fail the check digit on purpose)."""
    assert 'code: "306184000"' in (cards / "valuesets.yaml").read_text("utf-8")
    assert check_content(cards).problems == []


@needs_icd_table
def test_an_invalid_icd10cm_code_is_a_problem(cards, run):
    """An ICD-10-CM code that is not in the CMS tabular is reported (with the codes extra)."""
    _edit(cards / "valuesets.yaml", "code: M21.371,", "code: M21.379X,")
    status, lines = run(cards)
    assert status == 1
    assert any("'M21.379X' is not in the CMS ICD-10-CM table" in p for p in _problems(lines))


@needs_icd_table
def test_icd10cm_laterality_and_prefix_are_checked(cards):
    """Laterality must be the side the CMS description names; a category needs match: prefix."""
    _edit(
        cards / "valuesets.yaml",
        "{system: icd10cm, code: M21.372, display: ",
        "{system: icd10cm, code: M21.37, display: ",
    )
    problems = check_content(cards).problems
    assert any("M21.37 is a category" in p for p in problems), problems
    assert any("M21.37: laterality must be absent" in p for p in problems), problems


def test_without_the_code_table_icd10cm_is_not_checked_and_says_so(cards, run, monkeypatch):
    """Without simple_icd_10_cm the check still passes and one line says ICD-10-CM was skipped."""
    monkeypatch.setitem(sys.modules, "simple_icd_10_cm", None)  # makes the import fail
    assert icd10cm_table() is None
    _edit(cards / "valuesets.yaml", "code: M21.371,", "code: M21.379X,")  # not caught now
    status, lines = run(cards)
    assert status == 0, lines
    assert lines.count(f"  {ICD_NOT_CHECKED}") == 1
    assert "pip install 'footdrop-cds[codes]'" in ICD_NOT_CHECKED


def test_a_yaml_syntax_error_is_the_only_problem(cards, run):
    """One YAML syntax error gives one problem line naming the file and line, nothing else."""
    _edit(cards / "valuesets.yaml", "  footdrop-finding:", "  footdrop-finding: [")
    _edit(cards / "templates" / "plan-pt.md", "**", "$ **")  # would be a problem on its own
    status, lines = run(cards)
    assert status == 1
    assert lines[0].endswith(": 1 problem(s)")
    (problem,) = _problems(lines)
    assert problem.startswith("valuesets.yaml: line "), problem
    assert "column" in problem and "YAML syntax" in problem


def test_syntax_errors_in_two_files_are_both_reported(cards):
    """Every file that does not parse is named (and still nothing else)."""
    (cards / "card.yaml").write_text("source: [unclosed\n", "utf-8")
    (cards / "services.yaml").write_text("services:\n  - id: x\n   hook: y\n", "utf-8")
    problems = check_content(cards).problems
    assert [p.split(":")[0] for p in problems] == ["card.yaml", "services.yaml"], problems


def test_a_missing_directory_is_one_problem(tmp_path, run):
    status, lines = run(tmp_path / "nope")
    assert status == 1
    assert _problems(lines) == [f"{tmp_path / 'nope'}: not a directory"]


def test_a_broken_discovery_file_is_named(cards, run):
    """Discovery problems (prefetch template tokens) are part of the same run."""
    _edit(cards / "services.yaml", "{{context.patientId}}", "{{Patient.id}}")
    status, lines = run(cards)
    assert status == 1
    assert any(p.startswith("services.yaml: ") and "Patient.id" in p for p in _problems(lines))


@pytest.mark.parametrize("broken", [False, True], ids=["shipped", "snomed-typo"])
def test_the_command_line_never_prints_a_traceback(cards, broken):
    """`python -m cds_service.cli check-content` exits 0 / 1 with no traceback on stderr."""
    if broken:
        _edit(cards / "valuesets.yaml", 'code: "6077001"', 'code: "6077002"')
    result = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "check-content", str(cards)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == (1 if broken else 0), result.stdout + result.stderr
    assert ("fails the Verhoeff check digit" in result.stdout) is broken
