"""Recording today's MRC grades: the form's grades, the Observations (R1b coding), the write.

A grade is coded the way the engine reads it back (clinical.md R1b): the site's lateral row of
``mrc_codes.yaml`` for the movement and side when there is one, else the movement's unlateralised
row with the side in ``bodySite.text``, else ``mrc-<movement>`` in ``CDS_MRC_CODE_SYSTEM``. A
movement with none of these cannot be recorded and is not offered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from cds_service.app.errors import AppError
from cds_service.domain.mrc import MrcCodes

__all__ = ["GRADE_CHOICES", "Grade", "observation", "parse_form", "recordable", "write"]

MOVEMENTS = (
    ("ankle-dorsiflexion", "Ankle dorsiflexion"),
    ("ankle-eversion", "Ankle eversion"),
    ("ankle-plantarflexion", "Ankle plantar flexion"),
)
SIDES = ("left", "right")
GRADE_CHOICES = ("0", "1", "2", "3", "4-", "4", "4+", "5")
WRITE_TIMEOUT = 15.0
#: The standard category of a physical-examination finding (FHIR R4 observation-category).
EXAM = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "exam",
            "display": "Exam",
        }
    ]
}


@dataclass(frozen=True)
class Field:
    """One recordable grade: form field name, movement, side, the coding, side in bodySite?"""

    name: str
    movement: str
    label: str
    side: str
    coding: dict[str, str]
    body_site: bool


@dataclass(frozen=True)
class Grade:
    field: Field
    value: str  # one of GRADE_CHOICES


def recordable(mrc: MrcCodes) -> list[Field]:
    """The grades this site's coding can express, dorsiflexion first."""
    found = []
    for movement, label in MOVEMENTS:
        for side in SIDES:
            lateral = [r for r in mrc.rows if r.movement == movement and r.side == side]
            plain = [r for r in mrc.rows if r.movement == movement and r.side is None]
            if lateral:
                coding, body_site = {"system": lateral[0].system, "code": lateral[0].code}, False
            elif plain:
                coding, body_site = {"system": plain[0].system, "code": plain[0].code}, True
            elif mrc.code_system:
                coding, body_site = {"system": mrc.code_system, "code": f"mrc-{movement}"}, True
            else:
                continue
            name = f"{movement}-{side}"
            found.append(Field(name, movement, f"{label}, {side}", side, coding, body_site))
    return found


def parse_form(form: Mapping[str, str], mrc: MrcCodes) -> list[Grade]:
    """The grades filled in (blank fields skipped); AppError 400 for none or a bad value."""
    grades = []
    for item in recordable(mrc):
        raw = (form.get(item.name) or "").strip()
        if not raw:
            continue
        if raw not in GRADE_CHOICES:
            raise AppError(400, f"{item.label}: an MRC grade is 0 to 5 (4- and 4+ allowed).")
        grades.append(Grade(item, raw))
    if not grades:
        raise AppError(400, "Enter at least one grade to record.")
    return grades


def observation(grade: Grade, patient: str, now: datetime, mrc: MrcCodes) -> dict[str, Any]:
    """A final exam Observation the engine reads back as this grade (R1b)."""
    item = grade.field
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [EXAM],
        "code": {"coding": [item.coding], "text": f"MRC grade, {item.label.lower()}"},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": now.isoformat(timespec="seconds"),
    }
    if grade.value.isdigit():
        resource["valueInteger"] = int(grade.value)
    else:
        resource["valueString"] = f"{grade.value}/5"
    if item.body_site:
        resource["bodySite"] = {"text": f"{item.side} ankle"}
    return resource


def write(iss: str, token: str, observations: Sequence[dict[str, Any]]) -> None:
    """Create the Observations in one transaction (all or none); AppError on any failure."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": o, "request": {"method": "POST", "url": "Observation"}}
            for o in observations
        ],
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/fhir+json",
        "Accept": "application/fhir+json",
    }
    with requests.Session() as http:
        http.trust_env = False
        try:
            response = http.post(
                iss.rstrip("/"), data=json.dumps(bundle), headers=headers,
                timeout=WRITE_TIMEOUT, allow_redirects=False,
            )  # fmt: skip
        except requests.Timeout:
            raise AppError(
                504, "The FHIR server did not answer in time: nothing was recorded."
            ) from None
        except requests.RequestException:
            raise AppError(
                502, "The FHIR server could not be reached: nothing was recorded."
            ) from None
    if response.status_code in (401, 403):
        raise AppError(403, "The FHIR server refused the write: nothing was recorded.")
    if response.status_code not in (200, 201):
        raise AppError(502, "The FHIR server did not store the grades: nothing was recorded.")
