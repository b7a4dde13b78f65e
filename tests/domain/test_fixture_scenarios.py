"""Every patient-view fixture run straight through the engine (no Flask) against its outcome."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.domain.engine import evaluate_patient_view

from .factories import ROOT, content, suggestion_keys

FIXTURES = sorted((ROOT / "fixtures" / "patient-view").glob("*.json"))


def flatten(prefetch: Any) -> list[Any]:
    """Prefetch values as the web layer hands them over: Bundles flattened, nulls dropped."""
    out: list[Any] = []
    for value in (prefetch or {}).values():
        if value is None:
            continue
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            for entry in value.get("entry") or []:
                if isinstance(entry, dict) and entry.get("resource") is not None:
                    out.append(entry["resource"])
        else:
            out.append(value)
    return out


def _run(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    fixture = json.loads(path.read_text("utf-8"))
    request = fixture["request"]
    now = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
    evaluation = evaluate_patient_view(
        request["context"],
        flatten(request.get("prefetch")),
        content(),
        now,
        request["hookInstance"],
    )
    return fixture, evaluation.cards


def _trace(fixture: dict[str, Any]) -> dict[str, Any]:
    from tests.fixture_support import fixture_trace  # it imports flatten from here

    return fixture_trace(fixture)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_outcome(path: Path) -> None:
    """The engine gives each fixture exactly its expected card, indicator, suggestions and text."""
    fixture, cards = _run(path)
    expected = fixture["expected"]
    if not expected["card"]:
        assert cards == [], [c["summary"] for c in cards]
        return
    assert len(cards) == 1
    card = cards[0]
    assert card["indicator"] == expected["indicator"], card["summary"]
    keys = suggestion_keys(card)
    assert sorted(keys) == sorted(expected["suggestions"]), card["summary"]
    if expected["suggestions"]:
        assert keys[0] == expected["suggestions"][0], "the lead suggestion differs"
    if "emgNotBefore" in expected:
        emg = [
            s["actions"][0]["resource"]
            for s in card["suggestions"]
            if suggestion_keys({"suggestions": [s]}) == ["EMG_NCS"]
        ]
        occurrence = emg[0]["occurrenceDateTime"]
        assert occurrence == max(expected["emgNotBefore"], fixture["evalTime"][:10])
    for phrase in expected.get("detailIncludes", []):
        assert phrase.lower() in card["detail"].lower(), phrase
    trace = json.dumps(_trace(fixture), ensure_ascii=False).lower()
    for phrase in expected.get("traceIncludes", []):  # R9a: moved from the card to the page
        assert phrase.lower() in trace, phrase
    assert len(card["summary"]) < 140


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_resources_are_valid_fhir(path: Path) -> None:
    """Every resource suggested for a fixture validates with the fhir.resources R4B models."""
    _, cards = _run(path)
    for card in cards:
        for suggestion in card.get("suggestions", []):
            resource = suggestion["actions"][0]["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_fixtures_exist() -> None:
    """The twenty clinical scenarios are present as fixtures."""
    scenarios = {json.loads(p.read_text("utf-8")).get("scenario") for p in FIXTURES}
    assert set(range(1, 21)) <= scenarios
