"""R1b (clinical.md §4.4): MRC muscle-grade Observations as EHRs chart them.

No LOINC or SNOMED CT code for an MRC grade is verified, so a grade is recognised by

* a row of the site's mapping file (``cards/mrc_codes.yaml``, or ``CDS_MRC_CODES_FILE``): a
  flowsheet / observation code (system, code) -> movement and, for a lateral row, the side;
* a code ``mrc-<movement>`` in the site-owned code system (``CDS_MRC_CODE_SYSTEM``);
* the old example code ``http://example.org/fhir/CodeSystem/footdrop-cds-local#mrc-ankle-dorsiflexion``
  (accepted on input only).

Values: valueInteger 0-5; valueQuantity 0-5 (unit absent, ``{score}`` or ``1``); valueString or
valueCodeableConcept.text such as "4+/5", "3/5", "4-". Anything else ("weak") is not a grade.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "LEGACY_SYSTEM",
    "MOVEMENTS",
    "MrcCodes",
    "MrcRow",
    "grade_rank",
    "parse_grade",
    "parse_mrc_codes",
]

LEGACY_SYSTEM = "http://example.org/fhir/CodeSystem/footdrop-cds-local"
LEGACY_CODE = "mrc-ankle-dorsiflexion"
DORSIFLEXION = "ankle-dorsiflexion"
MOVEMENTS = frozenset(
    {
        "ankle-dorsiflexion",
        "great-toe-extension",
        "ankle-eversion",
        "ankle-inversion",
        "ankle-plantarflexion",
        "knee-extension",
        "knee-flexion",
        "hip-flexion",
        "hip-extension",
        "hip-abduction",
    }
)
SIDES = frozenset({"left", "right"})
_VALUE = re.compile(r"^\s*([0-5])\s*([+-])?\s*(/\s*5)?\s*$")
_QUANTITY_UNITS = frozenset({"{score}", "1"})
_SUB_RANK = {"-": -1, "": 0, "+": 1}


@dataclass(frozen=True, slots=True)
class MrcRow:
    system: str
    code: str
    movement: str
    side: str | None = None


@dataclass(frozen=True)
class MrcCodes:
    """How this site codes MRC grades: mapped rows plus the site-owned code system."""

    rows: tuple[MrcRow, ...] = ()
    code_system: str = ""
    index: Mapping[tuple[str, str], MrcRow] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {(r.system, r.code): r for r in self.rows})

    def lookup(self, concept: object) -> MrcRow | None:
        """The mapped row (movement, side) of an Observation.code; None when it is no MRC grade."""
        if not isinstance(concept, Mapping):
            return None
        index = self.index
        for coding in concept.get("coding") or ():
            if not isinstance(coding, Mapping):
                continue
            system, code = coding.get("system"), coding.get("code")
            if not isinstance(system, str) or not isinstance(code, str):
                continue
            row = index.get((system, code))
            if row is not None:
                return row
            if system == LEGACY_SYSTEM and code == LEGACY_CODE:
                return MrcRow(system, code, DORSIFLEXION)
            site_code = self.code_system and system == self.code_system
            if site_code and code.startswith("mrc-") and code[4:] in MOVEMENTS:
                return MrcRow(system, code, code[4:])
        return None


def parse_mrc_codes(doc: Any) -> tuple[MrcRow, ...]:
    """Rows of a parsed ``mrc_codes.yaml``; ValueError (one line) when it is malformed."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("codes"), list):
        raise ValueError("mrc_codes: a mapping with a 'codes' list is required")
    rows: list[MrcRow] = []
    seen: set[tuple[str, str]] = set()
    for i, raw in enumerate(doc["codes"]):
        where = f"mrc_codes: codes[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        system, code = raw.get("system"), raw.get("code")
        movement, side = raw.get("movement"), raw.get("side")
        if not isinstance(system, str) or not system.strip():
            raise ValueError(f"{where}: system must be a non-empty URI")
        if not isinstance(code, str | int) or not str(code).strip():
            raise ValueError(f"{where}: code must be a non-empty string")
        if movement not in MOVEMENTS:
            raise ValueError(f"{where}: movement must be one of {sorted(MOVEMENTS)}")
        if side is not None and side not in SIDES:
            raise ValueError(f"{where}: side must be left or right when given")
        key = (system.strip(), str(code).strip())
        if key in seen:
            raise ValueError(f"{where}: duplicate row {key[0]}|{key[1]}")
        seen.add(key)
        rows.append(MrcRow(key[0], key[1], str(movement), side))
    return tuple(rows)


def parse_grade(resource: Mapping[str, object]) -> tuple[int, str] | None:
    """(grade 0-5, sub-grade "+", "-" or "") of an MRC Observation's value; None if not a grade."""
    if "valueInteger" in resource:
        value = resource.get("valueInteger")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 5:
            return value, ""
        return None
    if "valueQuantity" in resource:
        quantity = resource.get("valueQuantity")
        if not isinstance(quantity, Mapping):
            return None
        units = {quantity.get("code"), quantity.get("unit")} - {None}
        if units and not units & _QUANTITY_UNITS:
            return None
        number = quantity.get("value")
        if isinstance(number, bool) or not isinstance(number, int | float):
            return None
        if float(number) != int(number) or not 0 <= number <= 5:
            return None
        return int(number), ""
    text: object = resource.get("valueString")
    concept = resource.get("valueCodeableConcept")
    if text is None and isinstance(concept, Mapping):
        text = concept.get("text")
    if not isinstance(text, str):
        return None
    match = _VALUE.match(text)
    if match is None:
        return None
    grade, sub = int(match.group(1)), match.group(2) or ""
    if (grade == 5 and sub == "+") or (grade == 0 and sub == "-"):
        return None
    return grade, sub


def grade_rank(grade: int, sub: str = "") -> int:
    """Orderable rank: 4- < 4 < 4+ < 5 (three steps per grade)."""
    return grade * 3 + _SUB_RANK.get(sub, 0)
