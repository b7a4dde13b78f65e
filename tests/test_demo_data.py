"""Demo patients dated today: the same cards as their fixtures, valid FHIR dates, a PUT Bundle."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service import create_app
from cds_service.demo_data import (
    DEMO_DIR,
    DEMOS,
    day_shift,
    demo_bundle,
    demo_requests,
    find_demo,
    shift_dates,
)
from tests.conftest import FIXTURES, assert_valid_response, dispose
from tests.fixture_support import check_outcome, check_prevention_outcome

#: Several "nows": today, and moments early and late in a UTC day, in winter and summer.
NOWS = (
    datetime.now(UTC),
    datetime(2026, 11, 29, 0, 30, tzinfo=UTC),
    datetime(2027, 3, 1, 21, 59, tzinfo=UTC),
    datetime(2026, 7, 15, 12, 0, tzinfo=timezone(timedelta(hours=-5))),
)
FHIR_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
FHIR_DATE_TIME = re.compile(
    r"\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?)?)?"
)


def _run(settings, request: dict[str, Any], service_id: str, now: datetime) -> dict[str, Any]:
    app = create_app(settings, clock=lambda: now)
    try:
        response = app.test_client().post(f"/cds-services/{service_id}", json=request)
    finally:
        dispose(app)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert_valid_response(body)
    return body


def _check(demo_expected: dict[str, Any], request: dict[str, Any], body: dict[str, Any]) -> None:
    fixture = {"expected": demo_expected, "request": request}
    if request["hook"] == "patient-view":
        check_outcome(fixture, body)
    else:
        check_prevention_outcome(fixture, body)


def _outline(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Indicator and suggestion labels of each card, with every date blanked out."""
    blank = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2} [A-Z][a-z]{2} \d{4}")
    return [
        (card["indicator"], [blank.sub("DATE", s["label"]) for s in card.get("suggestions", [])])
        for card in body["cards"]
    ]


def test_each_demo_is_a_copy_of_its_fixture():
    """The bundled demo files are the fixtures they name (they cannot drift apart)."""
    for spec in DEMOS:
        bundled = json.loads(DEMO_DIR.joinpath(f"{spec.slug}.json").read_text("utf-8"))
        (source,) = FIXTURES.glob(f"*/{bundled['id']}.json")
        assert bundled == json.loads(source.read_text("utf-8")), spec.slug


def test_demos_cover_positive_negative_red_flag_and_prevention():
    """The page offers each kind of outcome, each demo a different patient."""
    demos = demo_requests(NOWS[0])
    assert {d.kind for d in demos} == {"positive", "negative", "red flag", "prevention"}
    assert len({d.patient_id for d in demos}) == len(demos)
    assert {d.hook for d in demos} == {"patient-view", "order-select", "order-sign"}


@pytest.mark.parametrize("now", NOWS, ids=lambda n: n.isoformat())
def test_shifted_demos_give_their_fixtures_cards_today(settings, now):
    """Evaluated at ``now``, every shifted demo gives the card its fixture expects at evalTime."""
    for demo in demo_requests(now):
        assert abs(demo.eval_time - now) <= timedelta(hours=12)
        assert "fhirServer" not in demo.request
        body = _run(settings, demo.request, demo.service_id, now)
        _check(demo.expected, demo.request, body)


def test_each_shifted_demo_has_the_same_card_outline_as_its_fixture(settings):
    """Indicator and suggestion labels (dates aside) are the fixture's at its own evalTime."""
    for spec in DEMOS:
        fixture = json.loads(DEMO_DIR.joinpath(f"{spec.slug}.json").read_text("utf-8"))
        at = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
        original = _run(settings, fixture["request"], spec.service_id, at)
        now = NOWS[0]
        demo = find_demo(spec.slug, now)
        assert demo is not None
        shifted = _run(settings, demo.request, spec.service_id, now)
        assert _outline(shifted) == _outline(original), spec.slug


def test_shift_keeps_offsets_precision_and_time_of_day():
    """Dates move by whole days; offsets, precision, time of day and non-dates stay."""
    value = {
        "birthDate": "1979-04-18",
        "onsetDateTime": "2025-06-11T14:00:00+02:00",
        "issued": "2025-06-11T14:00:00.123Z",
        "minutes": "2025-12-31T23:59Z",
        "partial": "2025-12",
        "year": "2025",
        "code": "M21.372",
        "url": "http://example.org/2025-06-11",
        "notADate": "2025-02-30",
        "list": [{"start": "2025-06-10"}, 7, None, True],
    }
    shifted = shift_dates(value, timedelta(days=3))
    assert shifted == {
        "birthDate": "1979-04-21",
        "onsetDateTime": "2025-06-14T14:00:00+02:00",
        "issued": "2025-06-14T14:00:00.123Z",
        "minutes": "2026-01-03T23:59Z",
        "partial": "2025-12",
        "year": "2025",
        "code": "M21.372",
        "url": "http://example.org/2025-06-11",
        "notADate": "2025-02-30",
        "list": [{"start": "2025-06-13"}, 7, None, True],
    }
    assert value["birthDate"] == "1979-04-18", "the input is not changed"
    assert shift_dates(shifted, timedelta(days=-3)) == value
    assert shift_dates("2025-12", timedelta(days=40)) == "2026-01"
    with pytest.raises(ValueError):
        shift_dates(value, timedelta(hours=5))


def test_day_shift_brings_eval_time_within_half_a_day():
    """The shift is whole days and leaves the evaluation moment within 12 hours of now."""
    eval_time = datetime(2025, 6, 13, 10, 0, tzinfo=UTC)
    for now in NOWS:
        delta = day_shift(eval_time, now)
        assert delta % timedelta(days=1) == timedelta(0)
        assert abs(eval_time + delta - now) <= timedelta(hours=12)


def _dates(value: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for k, v in value.items() for pair in _dates(v, k)]
    if isinstance(value, list):
        return [pair for item in value for pair in _dates(item, key)]
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}", value):
        return [(key, value)]
    return []


def test_bundle_is_an_idempotent_transaction_of_valid_fhir_resources():
    """A transaction of PUTs, one per resource, each a valid R4 resource with valid dates."""
    now = NOWS[0]
    bundle = demo_bundle(now)
    assert get_fhir_model_class("Bundle").model_validate(bundle)  # the Bundle itself
    entries = bundle["entry"]
    urls = [e["request"]["url"] for e in entries]
    assert len(urls) == len(set(urls))
    assert all(e["request"]["method"] == "PUT" for e in entries)
    patients = {e["resource"]["id"] for e in entries if e["resource"]["resourceType"] == "Patient"}
    assert patients == {d.patient_id for d in demo_requests(now)}
    for entry in entries:
        resource = entry["resource"]
        assert entry["request"]["url"] == f"{resource['resourceType']}/{resource['id']}"
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        for key, text in _dates(resource):
            pattern = FHIR_DATE if key in {"birthDate", "date"} else FHIR_DATE_TIME
            assert pattern.fullmatch(text), (key, text)
    onset = next(
        e["resource"]["onsetDateTime"]
        for e in entries
        if e["resource"]["id"] == "pv01-cond-footdrop"
    )
    assert onset.startswith((now - timedelta(days=2)).date().isoformat()[:7])


def test_unknown_demo_and_naive_now_are_refused():
    """An unknown name is None; a naive ``now`` is an error, not a silent guess."""
    assert find_demo("no-such-demo", NOWS[0]) is None
    with pytest.raises(ValueError):
        demo_requests(datetime(2026, 1, 1))
