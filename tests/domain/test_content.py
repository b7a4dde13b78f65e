"""cards/ as data: loading, validation problems listed together, and edits without Python."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cds_service.domain.content import ORDERS, PHRASES, TEMPLATES, THRESHOLDS, ContentError
from cds_service.edge.content import load_content

from .factories import CARDS, card_of, condition, content, im_procedure


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_shipped_content_loads():
    """The shipped cards/ directory loads without problems."""
    loaded = load_content(CARDS)
    assert set(loaded.templates) == set(TEMPLATES)
    assert set(loaded.phrases) == set(PHRASES)
    assert set(loaded.orders) == set(ORDERS)
    assert loaded.footdrop.source["url"] == "https://doi.org/10.3238/arztebl.2019.0347"


def test_every_threshold_has_unit_and_evidence():
    """Every ★ threshold of clinical.md §2.2 is in thresholds.yaml with a unit and evidence."""
    doc = yaml.safe_load((CARDS / "thresholds.yaml").read_text())
    for name in THRESHOLDS:
        assert doc[name]["unit"] and doc[name]["evidence"].strip(), name
    assert content().thresholds.emg_not_before.days == 21


def test_changing_a_template_changes_the_card(tmp_cards):
    """Editing a Markdown template in a copy of cards/ changes the card text, no Python touched."""
    edited = tmp_cards(
        lambda d: (d / "templates" / "summary-warning.md").write_text(
            "${foot_drop} ${timing} ${injection}: SEE NEUROLOGY TODAY\n"
        )
    )
    card = card_of(condition(), im_procedure(), cards=edited)
    assert card["summary"].endswith("SEE NEUROLOGY TODAY")
    assert not card_of(condition(), im_procedure())["summary"].endswith("SEE NEUROLOGY TODAY")


def test_changing_a_threshold_changes_the_decision(tmp_cards):
    """Shrinking the immediate window in thresholds.yaml turns a 5.5-h onset into delayed (info)."""
    edited = tmp_cards(lambda d: _edit(d / "thresholds.yaml", "value: 48\n", "value: 4\n"))
    assert card_of(condition(), im_procedure(), cards=edited)["indicator"] == "info"


def test_changing_an_order_code_changes_the_resource(tmp_cards):
    """The AFO code comes from orders.yaml."""
    edited = tmp_cards(lambda d: _edit(d / "orders.yaml", "code: L1930", "code: L1971"))
    card = card_of(condition(), im_procedure(), cards=edited)
    codes = [s["actions"][0]["resource"] for s in card["suggestions"]]
    assert codes[0]["codeCodeableConcept"]["coding"][0]["code"] == "L1971"


def test_adding_a_trigger_code_without_python(tmp_cards):
    """A code added to a value set acts at once (here a local foot-drop code)."""

    def add(d: Path) -> None:
        _edit(
            d / "valuesets.yaml",
            '      - {system: snomed, code: "6077001", display: Foot drop, status: V-ONT}\n',
            '      - {system: snomed, code: "6077001", display: Foot drop, status: V-ONT}\n'
            "      - {system: local, code: fd, display: Local foot drop, status: LOCAL}\n",
        )

    edited = tmp_cards(add)
    trig = condition(
        "fd", "http://example.org/fhir/CodeSystem/footdrop-cds-local", body_side="left"
    )
    assert card_of(trig, im_procedure(), cards=edited)["indicator"] == "warning"
    assert card_of(trig, im_procedure()) is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: _edit(d / "templates" / "summary-info.md", "${reason}", "${reasn}"),
            "unknown placeholder ${reasn}",
        ),
        (lambda d: (d / "templates" / "plan-afo.md").unlink(), "templates/plan-afo.md: missing"),
        (lambda d: (d / "templates" / "extra.md").write_text("x"), "unknown template"),
        (
            lambda d: _edit(d / "templates" / "plan-pt.md", "**", "$ **"),
            "invalid placeholder syntax",
        ),
        (
            lambda d: _edit(
                d / "thresholds.yaml", "value: 21\n  unit: days", "value: 21\n  unit: grades"
            ),
            "emg_not_before: unit 'grades' is not a time unit",
        ),
        (
            lambda d: _edit(
                d / "thresholds.yaml",
                "value: 90\n  unit: days\n  rule: R4, R7",
                "value: -90\n  unit: days\n  rule: R4, R7",
            ),
            "attribution_limit",
        ),
        (
            lambda d: _edit(
                d / "thresholds.yaml", 'evidence: "E17 MRC scale (3', 'evidence: ""  #'
            ),
            "mrc_trigger_max",
        ),
        (lambda d: _edit(d / "valuesets.yaml", "code: M21.371,", "code: 12345,"), "valuesets.yaml"),
        (
            lambda d: _edit(
                d / "valuesets.yaml",
                "{system: icd10cm, code: M21.379,",
                "{system: icd9, code: M21.379,",
            ),
            "unknown system alias 'icd9'",
        ),
        (
            lambda d: _edit(
                d / "valuesets.yaml",
                "status: PROVISIONAL, corroborate: [sciatic]",
                "status: PROVISIONAL",
            ),
            "needs 'corroborate' words",
        ),
        (
            lambda d: _edit(d / "valuesets.yaml", "  footdrop-finding:", "  footdrop-findings:"),
            "value set 'footdrop-finding' is missing",
        ),
        (
            lambda d: _edit(d / "orders.yaml", "EMG/NCS of the ${leg}", "EMG/NCS of the ${limb}"),
            "unknown placeholder ${limb}",
        ),
        (
            lambda d: _edit(d / "card.yaml", "severity-mild: mild", "severity-mild: ${grade}"),
            "phrases.severity-mild: unknown placeholder",
        ),
        (lambda d: _edit(d / "card.yaml", "display: Patient declined", "note: x"), "card.yaml"),
        (
            lambda d: (d / "card.yaml").write_text("source: [unclosed"),
            "card.yaml: line ",
        ),
        (lambda d: (d / "orders.yaml").unlink(), "orders.yaml: missing"),
        (lambda d: (d / "thresholds.yaml").write_text("- 1\n"), "thresholds.yaml: must be a"),
    ],
)
def test_content_problems_are_reported(tmp_cards, edit, message):
    """Each kind of content mistake is a ContentError naming the file and the problem."""
    with pytest.raises(ContentError) as error:
        tmp_cards(edit)
    assert any(message in problem for problem in error.value.problems), error.value.problems


def test_all_problems_reported_at_once(tmp_cards):
    """Several mistakes in different files are all listed in one ContentError."""

    def edit(d: Path) -> None:
        _edit(d / "templates" / "summary-info.md", "${reason}", "${oops}")
        (d / "templates" / "note-child.md").unlink()
        _edit(d / "thresholds.yaml", "value: 21\n  unit: days", "value: 21\n  unit: grades")

    with pytest.raises(ContentError) as error:
        tmp_cards(edit)
    text = "\n".join(error.value.problems)
    assert "${oops}" in text and "note-child.md: missing" in text and "emg_not_before" in text
    assert "content problem" in str(error.value)


def test_a_yaml_syntax_error_is_reported_alone(tmp_cards):
    """A file that does not parse is the one problem reported (file, line, column), without the
    follow-on errors of every check that needs it."""

    def edit(d: Path) -> None:
        _edit(d / "valuesets.yaml", "  footdrop-finding:", "  footdrop-finding: [")
        _edit(d / "templates" / "summary-info.md", "${reason}", "${oops}")

    with pytest.raises(ContentError) as error:
        tmp_cards(edit)
    (problem,) = error.value.problems
    assert problem.startswith("valuesets.yaml: line ") and "column" in problem, problem


def test_the_c_yaml_loader_is_used_when_available():
    """Start-up parses cards/ with libyaml when PyYAML has it (8x faster than pure Python)."""
    from cds_service.edge.content import YAML_LOADER

    assert YAML_LOADER is getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def test_missing_directory_is_a_content_error(tmp_path):
    """A missing cards/ directory is reported, not a traceback."""
    with pytest.raises(ContentError):
        load_content(tmp_path / "nope")
