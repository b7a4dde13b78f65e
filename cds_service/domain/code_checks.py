"""Offline checks of the clinical codes in ``cards/``: SNOMED CT ids and ICD-10-CM codes.

SNOMED CT: the SCTID structure of clinical.md Appendix A — 6 to 18 digits, the Verhoeff check
digit, and partition identifier ``00`` or ``10`` (a concept id). It catches typos, not meaning.

ICD-10-CM: every code is an item of the CMS tabular, its ``laterality`` is exactly the side the
official CMS description names, ``match: prefix`` is declared only on categories (non-leaf items)
and an exact code is a billable leaf. The table is passed in as an :class:`IcdTable` (the
``simple_icd_10_cm`` module satisfies it); reading it is the edge's job, so this module stays pure.

Semantics kept from the value-set tests:

* SNOMED CT ids of ``UNVERIFIED`` / ``REJECTED`` value-set entries are documentation and are not
  checked (some are kept precisely because they fail the check digit); every other SNOMED CT code
  in ``valuesets.yaml``, ``orders.yaml``, ``card.yaml`` and ``services.yaml`` (prefetch queries
  included) is.
* Every ICD-10-CM value-set entry is checked, inactive ones included: a category (``M21.37``,
  ``G35``) is a valid item of the table. A ``match: prefix`` entry on a leaf is allowed only when
  it carves that leaf out (``exclude: true``, e.g. G61.0 out of G61).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cds_service.domain.codes import ICD10CM, INACTIVE_STATUSES

__all__ = [
    "ICD10CM_URI",
    "SNOMED_URI",
    "CodeCheckCounts",
    "IcdTable",
    "code_problems",
    "icd_entry_problems",
    "icd_laterality",
    "sctid_ok",
    "sctid_problem",
]

SNOMED = "snomed"
SNOMED_URI = "http://snomed.info/sct"
ICD10CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"

# Verhoeff tables of clinical.md Appendix A (SNOMED CT identifier check digit).
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
#: Partition identifiers of a concept id (short and long format).
CONCEPT_PARTITIONS = ("00", "10")


class IcdTable(Protocol):
    """The part of the CMS ICD-10-CM tabular the checks need (``simple_icd_10_cm`` has it)."""

    def is_valid_item(self, code: str) -> bool: ...

    def is_leaf(self, code: str) -> bool: ...

    def get_description(self, code: str) -> str: ...


def sctid_problem(code: str) -> str | None:
    """What is wrong with a SNOMED CT concept id, or None when it passes Appendix A."""
    if not code.isascii() or not code.isdigit() or not 6 <= len(code) <= 18:
        return f"SNOMED CT id {code!r} must be 6 to 18 digits"
    check = 0
    for i, ch in enumerate(reversed(code)):
        check = _D[check][_P[i % 8][int(ch)]]
    if check != 0:
        return f"SNOMED CT id {code!r} fails the Verhoeff check digit (a typo?)"
    partition = code[-3:-1]
    if partition not in CONCEPT_PARTITIONS:
        return (
            f"SNOMED CT id {code!r} has partition identifier {partition!r}, "
            f"not a concept id ({' or '.join(CONCEPT_PARTITIONS)})"
        )
    return None


def sctid_ok(code: str) -> bool:
    """SCTID structure: digits, 6-18 long, Verhoeff check digit, concept partition 00 or 10."""
    return sctid_problem(code) is None


def icd_laterality(description: str) -> str | None:
    """The side an official CMS description names: left, right, bilateral or None."""
    words = description.lower().replace(",", " ").split()
    if "bilateral" in words:
        return "bilateral"
    if "right" in words and "left" not in words:
        return "right"
    if "left" in words and "right" not in words:
        return "left"
    return None


def icd_entry_problems(entry: Mapping[str, Any], table: IcdTable) -> list[str]:
    """Problems of one ICD-10-CM value-set entry against the CMS table (empty when it is fine)."""
    code = str(entry.get("code", "")).strip()
    if not table.is_valid_item(code):
        return [f"{code!r} is not in the CMS ICD-10-CM table"]
    problems: list[str] = []
    side = icd_laterality(table.get_description(code))
    if entry.get("laterality") != side:
        problems.append(
            f"{code}: laterality must be {side or 'absent'} "
            f"(CMS: {table.get_description(code)!r}), not {entry.get('laterality') or 'absent'}"
        )
    leaf = table.is_leaf(code)
    if entry.get("match") == "prefix":
        if leaf and not entry.get("exclude"):
            problems.append(f"{code} is a billable code, not a category: drop 'match: prefix'")
    elif not leaf:
        problems.append(f"{code} is a category, not a billable code: use 'match: prefix'")
    return problems


@dataclass(slots=True)
class CodeCheckCounts:
    """How many codes the checks looked at (for the check-content summary)."""

    snomed: int = 0
    icd10cm: int = 0


def code_problems(
    documents: Mapping[str, Any],
    icd: IcdTable | None,
    counts: CodeCheckCounts | None = None,
) -> list[str]:
    """Check every code of the parsed ``cards/`` documents (keyed by file name).

    ``icd`` None skips the ICD-10-CM table checks (the caller says so). Entries too malformed to
    check are skipped: the structural content check reports them.
    """
    counts = counts if counts is not None else CodeCheckCounts()
    problems: list[str] = []
    valuesets = documents.get("valuesets.yaml")
    valuesets = valuesets if isinstance(valuesets, Mapping) else {}
    snomed_systems, icd_systems = _systems(valuesets)

    sets = valuesets.get("valuesets")
    for name, body in sets.items() if isinstance(sets, Mapping) else ():
        codes = body.get("codes") if isinstance(body, Mapping) else None
        for i, entry in enumerate(codes if isinstance(codes, list) else ()):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("code"), str):
                continue
            at = f"valuesets.yaml: {name}[{i}]"
            system, code = entry.get("system"), entry["code"].strip()
            if system == SNOMED:
                if entry.get("status") in INACTIVE_STATUSES or not code.isdigit():
                    continue  # documentation only / reported by the structural check
                counts.snomed += 1
                problem = sctid_problem(code)
                if problem:
                    problems.append(f"{at}: {problem}")
            elif system == ICD10CM and icd is not None:
                counts.icd10cm += 1
                problems.extend(f"{at}: {p}" for p in icd_entry_problems(entry, icd))

    for name in ("orders.yaml", "card.yaml", "services.yaml"):
        for path, system, code in _codings(documents.get(name)):
            where = f"{name}: {path}" if path else name
            if system in snomed_systems:
                counts.snomed += 1
                problem = sctid_problem(code)
                if problem:
                    problems.append(f"{where}: {problem}")
            elif system in icd_systems and icd is not None:
                counts.icd10cm += 1
                if not icd.is_valid_item(code):
                    problems.append(f"{where}: {code!r} is not in the CMS ICD-10-CM table")
    return problems


def _systems(valuesets: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """The alias and every URI naming SNOMED CT and ICD-10-CM (from ``systems:`` when given)."""
    systems = valuesets.get("systems")
    systems = systems if isinstance(systems, Mapping) else {}

    def names(alias: str, default: str) -> frozenset[str]:
        uris = systems.get(alias)
        listed = [u for u in uris if isinstance(u, str)] if isinstance(uris, list) else []
        return frozenset({alias, default, *listed})

    return names(SNOMED, SNOMED_URI), names(ICD10CM, ICD10CM_URI)


# A coded token of a FHIR search parameter: system|code (values separated by commas).
_TOKEN = re.compile(r"(?P<system>[a-z][a-z0-9+.-]*:[^|,&\s]+)\|(?P<code>[^,&\s]+)")


def _codings(node: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """(path, system, code) of every ``{system, code}`` mapping and ``system|code`` token."""
    if isinstance(node, Mapping):
        system, code = node.get("system"), node.get("code")
        coding = isinstance(system, str) and isinstance(code, str)
        if coding:
            yield path, str(system), str(code).strip()
        for key, value in node.items():
            if not (coding and key in ("system", "code")):
                yield from _codings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _codings(value, f"{path}[{i}]")
    elif isinstance(node, str) and "|" in node:
        for match in _TOKEN.finditer(node):
            yield path, match["system"], match["code"]
