"""Properties of revision 2 (clinical.md §4.3 R0a, §4.4 R8b) over every patient-view fixture.

* Shifting every date of a request and the evaluation time by the same number of days (offsets
  kept) never changes the outcome.
* When a request has no date-only values, rewriting its instants into another offset (the same
  instants) never changes the outcome.
* An order in status revoked / cancelled / entered-in-error never suppresses a suggestion: it
  counts exactly as if it were absent.
* No card ever shows a date before ``now`` as a future action.

"Outcome" is what the clinician acts on: the number of cards, their indicators and the kinds of
suggested orders. Examples are bounded and derandomized.
"""

from __future__ import annotations

import copy
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.domain.engine import Policy, evaluate_patient_view
from tests.fixture_support import suggested_resources, suggestion_key
from tests.test_engine_properties import SEEDS, Seed, content

BOUNDED = settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}:\d{2})$"
)
PARTIAL = re.compile(r"^\d{4}(-\d{2})?$")
FUTURE_DATE = re.compile(r"(?:on or after|not before|from) (\d{4}-\d{2}-\d{2})")
ORDERS = ("DeviceRequest", "ServiceRequest")


def outcome(seed: Seed, resources: list[Any], now: datetime) -> list[tuple[str, tuple[str, ...]]]:
    """(indicator, sorted suggestion kinds) of every card."""
    cards = evaluate_patient_view(
        seed.context, resources, content(), now, seed.hook_instance, Policy()
    ).cards
    return [
        (c["indicator"], tuple(sorted(suggestion_key(r) for r in suggested_resources(c))))
        for c in cards
    ]


def _walk(node: Any, fn: Any) -> Any:
    if isinstance(node, dict):
        return {k: (v if k == "id" else _walk(v, fn)) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    if isinstance(node, str):
        return fn(node)
    return node


def _shift(text: str, days: int) -> str:
    """``text`` moved by ``days`` calendar days when it is a full FHIR date or dateTime."""
    try:
        if DATE.match(text):
            return (date.fromisoformat(text) + timedelta(days=days)).isoformat()
        m = DATETIME.match(text)
        if m:
            day = date.fromisoformat(m.group(1)) + timedelta(days=days)
            return f"{day.isoformat()}T{m.group(2)}{m.group(3)}"
    except ValueError:
        return text
    return text


def _has_partial_dates(seed: Seed) -> bool:
    found: list[str] = []
    _walk(list(seed.resources), lambda s: found.append(s) if PARTIAL.match(s) else s)
    return bool(found)


def _date_only_values(seed: Seed) -> bool:
    """True when any resource other than the Patient carries a date-only (or partial) value."""
    found: list[str] = []
    others = [r for r in seed.resources if r.get("resourceType") != "Patient"]
    _walk(others, lambda s: found.append(s) if DATE.match(s) or PARTIAL.match(s) else s)
    return bool(found)


@BOUNDED
@given(st.sampled_from(SEEDS), st.integers(min_value=-800, max_value=800))
def test_shifting_every_date_and_now_keeps_the_outcome(seed: Seed, days: int) -> None:
    """Moving every date, dateTime and the evaluation time by the same days changes nothing.

    Fixtures with year or month precision values are left out (those cannot move by days).
    """
    if _has_partial_dates(seed):
        return
    shifted = _walk(copy.deepcopy(list(seed.resources)), lambda s: _shift(s, days))
    assert outcome(seed, shifted, seed.now + timedelta(days=days)) == outcome(
        seed, list(seed.resources), seed.now
    )


def _reoffset(text: str, offset: timedelta) -> str:
    m = DATETIME.match(text)
    if not m:
        return text
    try:
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    moved = instant.astimezone(timezone(offset))
    return moved.isoformat()


NO_DATE_ONLY = [s for s in SEEDS if not _date_only_values(s)]
offsets = st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: timedelta(minutes=15 * q))


@BOUNDED
@given(st.sampled_from(NO_DATE_ONLY), offsets)
def test_rewriting_instants_into_another_offset_keeps_the_outcome(
    seed: Seed, offset: timedelta
) -> None:
    """Without date-only values, the same instants written in another offset give the same card."""
    moved = _walk(copy.deepcopy(list(seed.resources)), lambda s: _reoffset(s, offset))
    assert outcome(seed, moved, seed.now) == outcome(seed, list(seed.resources), seed.now)


def test_offset_property_has_seeds() -> None:
    """Enough fixtures have no date-only values for the offset property to mean something."""
    assert len(NO_DATE_ONLY) >= 10


NEVER_COUNT = {
    "DeviceRequest": ("revoked", "entered-in-error", "unknown"),
    "ServiceRequest": ("revoked", "entered-in-error", "unknown"),
    "Appointment": ("cancelled", "entered-in-error", "noshow"),
}


@BOUNDED
@given(st.sampled_from(SEEDS), st.data())
def test_revoked_cancelled_or_erroneous_orders_count_as_absent(seed: Seed, data: Any) -> None:
    """Orders set to revoked / cancelled / entered-in-error never suppress: as if absent."""
    resources = copy.deepcopy(list(seed.resources))
    kept: list[Any] = []
    voided: list[Any] = []
    for resource in resources:
        kinds = NEVER_COUNT.get(resource.get("resourceType"))
        if kinds and data.draw(st.booleans()):
            resource["status"] = data.draw(st.sampled_from(kinds))
            voided.append(resource)
        else:
            kept.append(resource)
    assert outcome(seed, [*kept, *voided], seed.now) == outcome(seed, kept, seed.now)


def _extra_order(patient: str, kind: str, status: str, authored: str) -> dict[str, Any]:
    hcpcs = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
    codes = {
        "AFO": ("DeviceRequest", hcpcs, "L1930"),
        "PT": ("ServiceRequest", "http://snomed.info/sct", "306170007"),
        "EMG": ("ServiceRequest", "http://snomed.info/sct", "306276006"),
        "FU": ("ServiceRequest", "http://snomed.info/sct", "390906007"),
        "NS": ("ServiceRequest", "http://snomed.info/sct", "308482002"),
        "ORTHO": ("ServiceRequest", "http://snomed.info/sct", "308481009"),
    }
    rtype, system, code = codes[kind]
    key = "codeCodeableConcept" if rtype == "DeviceRequest" else "code"
    return {
        "resourceType": rtype,
        "id": f"void-{kind.lower()}-{status}",
        "status": status,
        "intent": "order",
        key: {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": authored,
    }


@BOUNDED
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(
            st.sampled_from(["AFO", "PT", "EMG", "FU", "NS", "ORTHO"]),
            st.sampled_from(["revoked", "entered-in-error", "unknown"]),
            st.integers(min_value=-400, max_value=0),
        ),
        max_size=6,
    ),
)
def test_adding_void_orders_never_removes_a_suggestion(
    seed: Seed, extra: list[tuple[str, str, int]]
) -> None:
    """New revoked / entered-in-error / unknown orders of every kind leave the outcome unchanged."""
    patient = str(seed.context.get("patientId"))
    orders = [
        _extra_order(patient, kind, status, (seed.now + timedelta(days=d)).isoformat())
        for kind, status, d in extra
    ]
    unique = list({o["id"]: o for o in orders}.values())
    assert outcome(seed, [*seed.resources, *unique], seed.now) == outcome(
        seed, list(seed.resources), seed.now
    )


def _future_dates(card: dict[str, Any]) -> list[str]:
    """Every date a card offers as a future action: occurrences, labels, plan sentences."""
    found: list[str] = []
    for suggestion in card.get("suggestions", []):
        found += FUTURE_DATE.findall(suggestion.get("label", ""))
        for action in suggestion.get("actions", []):
            found += FUTURE_DATE.findall(action.get("description", ""))
    for resource in suggested_resources(card):
        when = resource.get("occurrenceDateTime") or (resource.get("occurrencePeriod") or {}).get(
            "start"
        )
        if when:
            found.append(when[:10])
    # R9a: the short card's plan line and the summary's action ("EMG/NCS from <date>")
    for line in card.get("detail", "").splitlines():
        if line.startswith("**Plan**"):
            found += FUTURE_DATE.findall(line)
    found += FUTURE_DATE.findall(card.get("summary", ""))
    return found


@BOUNDED
@given(st.sampled_from(SEEDS), st.integers(min_value=0, max_value=500))
def test_no_card_shows_a_past_date_as_a_future_action(seed: Seed, later: int) -> None:
    """Evaluated on the fixture's day or up to 500 days later, no action is dated before today."""
    now = seed.now + timedelta(days=later)
    cards = evaluate_patient_view(
        seed.context, list(seed.resources), content(), now, seed.hook_instance, Policy()
    ).cards
    today = now.date().isoformat()
    for card in cards:
        for day in _future_dates(card):
            assert day >= today, (card["summary"], day, today)
