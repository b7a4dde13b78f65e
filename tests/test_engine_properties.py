"""Properties of ``evaluate_patient_view`` over every patient-view fixture as a seed.

Hypothesis varies the fixtures' own resources: it corrupts them with odd values and garbage,
shuffles them, repeats them and pads them with unrelated resources. Examples are bounded and
derandomized, so CI sees the same cases on every run.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import schemas
from cds_service.config import DEFAULT_CONTENT_DIR
from cds_service.domain.content import Content
from cds_service.domain.engine import Evaluation, Policy, evaluate_patient_view
from cds_service.domain.prefetch import plan_prefetch
from cds_service.edge.content import load_content
from cds_service.edge.discovery import load_services
from tests.conftest import FIXTURES, FOOTDROP

FIXTURE_FILES = sorted((FIXTURES / "patient-view").glob("*.json"))
BOUNDED = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@cache
def content() -> Content:
    return load_content(DEFAULT_CONTENT_DIR)


@cache
def prefetch_keys() -> tuple[str, ...]:
    spec = next(s for s in load_services(DEFAULT_CONTENT_DIR) if s.id == FOOTDROP)
    return spec.prefetch_keys


@dataclass(frozen=True)
class Seed:
    """One fixture's request as the engine receives it: flattened resources, context, time."""

    name: str
    context: dict[str, Any]
    resources: tuple[dict[str, Any], ...]
    now: datetime
    hook_instance: str

    def evaluate(self, resources: list[Any]) -> Evaluation:
        return evaluate_patient_view(
            self.context, resources, content(), self.now, self.hook_instance, Policy()
        )

    def cards(self, resources: list[Any]) -> list[dict[str, Any]]:
        return self.evaluate(resources).cards


def _seed(path: Path) -> Seed:
    fixture = json.loads(path.read_text("utf-8"))
    request = fixture["request"]
    planned = plan_prefetch(request.get("prefetch") or {}, prefetch_keys()).resources
    resources = tuple(r for key in prefetch_keys() for r in planned.get(key, ()))
    now = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
    return Seed(path.stem, request["context"], resources, now, request["hookInstance"])


SEEDS = [_seed(path) for path in FIXTURE_FILES]
seeds = st.sampled_from(SEEDS)


# --- odd values and garbage --------------------------------------------------------------------

ODD_STRINGS = [
    "",
    " ",
    "2025-02-30",
    "2025-13-01",
    "0000-00-00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999+14:00",
    "2025-06-11T25:61:61Z",
    "2025-06-11T14:00:00",
    "2025",
    "2025-06",
    "-2025-06-11",
    "2025-06-11T14:00:00+99:00",
    "\x00",
    "\ud800",
    "a" * 5000,
    "🦶",
    "NaN",
    "M21.372",
    "left",
    "LG",
    "Patient/",
    "Patient/pv01",
]
FHIR_KEYS = [
    "resourceType",
    "id",
    "code",
    "coding",
    "system",
    "display",
    "text",
    "subject",
    "patient",
    "reference",
    "status",
    "clinicalStatus",
    "verificationStatus",
    "bodySite",
    "site",
    "route",
    "dosage",
    "onsetDateTime",
    "performedDateTime",
    "effectiveDateTime",
    "occurrenceDateTime",
    "valueInteger",
    "valueCodeableConcept",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(ODD_STRINGS),
)
odd_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FHIR_KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for n in range(depth):
        value = [value] if n % 2 else {"coding": value, "text": value if n < 3 else None}
    return value


deep_values = st.builds(_nested, st.integers(min_value=50, max_value=400), scalars)
garbage_resources = st.builds(
    lambda rtype, body: {**body, "resourceType": rtype},
    st.sampled_from(
        [
            "Condition",
            "Procedure",
            "Observation",
            "MedicationAdministration",
            "Immunization",
            "DeviceRequest",
            "ServiceRequest",
            "Appointment",
            "Patient",
            "Bundle",
            "",
            7,
            None,
        ]
    ),
    st.dictionaries(st.sampled_from(FHIR_KEYS), odd_values | deep_values, max_size=6),
)


def corrupt(node: Any, data: st.DataObject) -> None:
    """Replace one value somewhere inside ``node`` (a dict or list) with an odd one."""
    while True:
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node, key=str)))
            child = node[key]
        elif isinstance(node, list) and node:
            key = data.draw(st.integers(min_value=0, max_value=len(node) - 1))
            child = node[key]
        else:
            return
        if not isinstance(child, dict | list) or not child or data.draw(st.booleans()):
            node[key] = data.draw(odd_values | deep_values)
            return
        node = child


def assert_well_formed(evaluation: Evaluation, given: int) -> None:
    assert len(evaluation.cards) <= 1
    assert evaluation.resources_read + evaluation.resources_skipped <= given
    assert schemas.problems("hook-response", {"cards": evaluation.cards}) == []
    json.dumps(evaluation.cards, allow_nan=False)


@BOUNDED
@given(data=st.data())
def test_any_mix_of_resources_never_raises(data):
    """Fixture resources with odd values planted anywhere, plus garbage of any type, never make
    the engine raise; it answers at most one schema-valid card, all plain JSON."""
    seed = data.draw(seeds, label="seed")
    resources: list[Any] = copy.deepcopy(list(seed.resources))
    for _ in range(data.draw(st.integers(min_value=1, max_value=6), label="changes")):
        if resources and data.draw(st.booleans()):
            index = data.draw(st.integers(min_value=0, max_value=len(resources) - 1))
            if isinstance(resources[index], dict | list):
                corrupt(resources[index], data)
        else:
            junk = data.draw(garbage_resources | odd_values | deep_values, label="junk")
            resources.insert(data.draw(st.integers(min_value=0, max_value=len(resources))), junk)
    assert_well_formed(seed.evaluate(resources), len(resources))


# --- order, repetition and unrelated resources --------------------------------------------------


@BOUNDED
@given(data=st.data())
def test_cards_do_not_depend_on_resource_order(data):
    """The same resources in any order give exactly the same cards."""
    seed = data.draw(seeds, label="seed")
    order = data.draw(st.permutations(range(len(seed.resources))), label="order")
    shuffled = [seed.resources[i] for i in order]
    assert seed.cards(shuffled) == seed.cards(list(seed.resources))


@BOUNDED
@given(data=st.data())
def test_a_resource_delivered_twice_changes_nothing(data):
    """A resource that arrives twice (say, in two prefetch keys) gives the same cards as once."""
    seed = data.draw(seeds, label="seed")
    if not seed.resources:
        return
    again = data.draw(st.lists(st.sampled_from(seed.resources), min_size=1, max_size=5))
    assert seed.cards([*seed.resources, *copy.deepcopy(again)]) == seed.cards(list(seed.resources))


LOINC_VITALS = ["8867-4", "8480-6", "8462-4", "8310-5", "9279-1", "59408-5", "29463-7"]
UNRELATED_ICD = ["I10", "E78.5", "J06.9", "K21.9", "N39.0", "H52.4", "J45.909", "L40.0"]
ORAL_DRUGS = ["Paracetamol 1 g tablet", "Omeprazole 20 mg capsule", "Amoxicillin 500 mg"]
OTHER_TYPES = ["Encounter", "AllergyIntolerance", "DocumentReference", "Basic", "Location"]
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"


def _unrelated(kind: str, code: str, moment: str, patient: str, n: int) -> dict[str, Any]:
    subject = {"reference": f"Patient/{patient}"}
    rid = f"unrelated-{n}"
    if kind == "vital":
        return {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": subject,
            "effectiveDateTime": moment,
            "valueQuantity": {"value": 80, "unit": "/min"},
        }
    if kind == "condition":
        return {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": ICD, "code": code}]},
            "subject": subject,
            "onsetDateTime": moment,
        }
    if kind == "oral":
        return {
            "resourceType": "MedicationAdministration",
            "id": rid,
            "status": "completed",
            "medicationCodeableConcept": {"text": code},
            "subject": subject,
            "effectiveDateTime": moment,
            "dosage": {"route": {"text": "oral"}},
        }
    return {"resourceType": code, "id": rid, "subject": subject, "date": moment}


def unrelated_resources(seed: Seed) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Vital signs, unrelated diagnoses, oral drugs and irrelevant resource types of this
    patient, and copies of the fixture's own resources that belong to another patient."""
    patient = seed.context.get("patientId", "p1")
    when = st.integers(min_value=0, max_value=3 * 365 * 24 * 60).map(
        lambda minutes: (seed.now - timedelta(minutes=minutes)).isoformat()
    )
    own = st.one_of(
        st.tuples(st.just("vital"), st.sampled_from(LOINC_VITALS)),
        st.tuples(st.just("condition"), st.sampled_from(UNRELATED_ICD)),
        st.tuples(st.just("oral"), st.sampled_from(ORAL_DRUGS)),
        st.tuples(st.just("other"), st.sampled_from(OTHER_TYPES)),
    )
    items = st.lists(st.tuples(own, when), max_size=30)
    strangers = st.lists(st.sampled_from(seed.resources), max_size=10) if seed.resources else None

    def build(found: list, copies: list) -> list[dict[str, Any]]:
        made = [_unrelated(k, c, m, patient, n) for n, ((k, c), m) in enumerate(found)]
        for n, original in enumerate(copies):
            stranger = copy.deepcopy(original)
            stranger["id"] = f"stranger-{n}"
            for field in ("subject", "patient"):
                if field in stranger or stranger["resourceType"] != "Patient":
                    stranger[field] = {"reference": "Patient/someone-else"}
            if stranger["resourceType"] == "Patient":
                continue  # another Patient resource is not "unrelated" to the context
            made.append(stranger)
        return made

    if strangers is None:
        return items.map(lambda found: build(found, []))
    return st.builds(build, items, strangers)


@BOUNDED
@given(data=st.data())
def test_unrelated_resources_never_change_the_cards(data):
    """Padding a fixture with unrelated resources, anywhere in the list, leaves its cards as
    they were."""
    seed = data.draw(seeds, label="seed")
    extra = data.draw(unrelated_resources(seed), label="unrelated")
    padded = list(seed.resources)
    for resource in extra:
        padded.insert(data.draw(st.integers(min_value=0, max_value=len(padded))), resource)
    assert seed.cards(padded) == seed.cards(list(seed.resources))


def test_every_fixture_is_a_seed():
    """Each patient-view fixture is a seed, and most seeds give a card (so the properties above
    compare real cards, not empty lists)."""
    assert len(SEEDS) == len(FIXTURE_FILES) > 0
    assert sum(1 for seed in SEEDS if seed.cards(list(seed.resources))) > len(SEEDS) / 2
