"""Feedback on real cards: issue cards through the app, then post what clinicians did with them."""

from __future__ import annotations

from typing import Any

from tests.fixture_support import (
    ORDER_SIGN_FIXTURES,
    PATIENT_VIEW_FIXTURES,
    PREVENTION_SERVICES,
    load_fixture,
)

FOOTDROP = "footdrop-im-injection"
LOCAL = "http://example.org/fhir/CodeSystem/footdrop-cds-local"


def issue_cards(client: Any, clock: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A foot-drop card with suggestions and a prevention card with suggestions."""
    positive = load_fixture(PATIENT_VIEW_FIXTURES[0])
    clock.set(positive["evalTime"])
    footdrop = client.post(f"/cds-services/{FOOTDROP}", json=positive["request"]).get_json()
    sign = load_fixture(ORDER_SIGN_FIXTURES[9])
    clock.set(sign["evalTime"])
    service = PREVENTION_SERVICES["order-sign"]
    prevention = client.post(f"/cds-services/{service}", json=sign["request"]).get_json()
    return footdrop["cards"][0], prevention["cards"][0]


def post_feedback(client: Any, footdrop: dict[str, Any], prevention: dict[str, Any]) -> None:
    """Week 1: foot-drop accepted (two suggestions), prevention overridden with a reason.
    Week 2: foot-drop overridden without a reason on a re-issued card uuid; prevention accepted."""
    afo, second = (s["uuid"] for s in footdrop["suggestions"][:2])
    service = PREVENTION_SERVICES["order-sign"]
    items = {
        FOOTDROP: [
            {
                "card": footdrop["uuid"],
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": afo}, {"id": second}],
                "outcomeTimestamp": "2026-03-03T10:00:00Z",
            },
            {
                "card": footdrop["uuid"][:-4] + "abcd",  # same kind (tag), another card
                "outcome": "overridden",
                "outcomeTimestamp": "2026-03-10T10:00:00Z",
            },
        ],
        service: [
            {
                "card": prevention["uuid"],
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {"system": LOCAL, "code": "patient-preference"},
                    "userComment": "free text that is never stored",
                },
                "outcomeTimestamp": "2026-03-04T10:00:00Z",
            },
            {
                "card": prevention["uuid"][:-4] + "abcd",
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": prevention["suggestions"][0]["uuid"]}],
                "outcomeTimestamp": "2026-03-11T10:00:00Z",
            },
        ],
    }
    for service_id, batch in items.items():
        answer = client.post(f"/cds-services/{service_id}/feedback", json={"feedback": batch})
        assert answer.status_code == 200, answer.get_json()
