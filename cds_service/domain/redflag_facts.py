"""Facts the red-flag pathways R7a-R7f read beyond the foot-drop facts (clinical.md §4.1).

Kept out of :mod:`facts` so that module stays small: body-site codes of a Condition (coded site
alone suffices, post-coordinated laterality read), text-only haematoma / saddle-anaesthesia
Conditions, symptom findings recorded as Observations, and anticoagulant exposure (R7c) from
MedicationRequest, MedicationStatement, MedicationAdministration, INR Observations and the
Medication resources they reference. Nothing here raises on malformed input: an unreadable element
is treated as absent.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cds_service.domain.codes import CodeEntry, CodeIndex, Match
from cds_service.domain.content import BODY_SITE_VALUESETS, Content
from cds_service.domain.fhirtime import parse_interval, period_interval

DRUG_SETS = frozenset({"anticoagulant-drug", "anticoagulant-flush"})
INR_SETS = frozenset({"inr"})
LATERALITY_ATTRIBUTE = "272741003"
QUALIFIER_SIDES = {"7771000": "left", "24028007": "right", "51440002": "bilateral"}
FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})
#: R7c status rules (clinical.md §4.1).
REQUEST_OPEN = frozenset({"active", "on-hold"})
REQUEST_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order", "plan"}
)
STATEMENT_OPEN = frozenset({"active", "intended"})
ADMINISTRATION_STATUSES = frozenset({"completed", "in-progress"})

_HAEMATOMA_TEXT = re.compile(r"ha?ematoma|hematoma|compartment syndrome", re.IGNORECASE)
_SADDLE_TEXT = re.compile(r"saddle\s+(an(a)?esthesia|numbness)", re.IGNORECASE)
_FLUSH_TEXT = re.compile(r"flush|lock|line patency", re.IGNORECASE)
_ANY_TEXT = re.compile(r"ma?toma|compartment|saddle", re.IGNORECASE)


def is_flush(text: str) -> bool:
    """A heparin flush / lock / line-patency text: never anticoagulation (R7c)."""
    return _FLUSH_TEXT.search(text) is not None


def _synthetic(valueset: str, tag: str, display: str) -> Match:
    entry = CodeEntry(valueset, "text", "text", display, "TEXT", tag=tag)
    return Match(entry, "text", display)


def text_condition_matches(concept: object) -> list[Match]:
    """Matches of a Condition code that has no recognised coding, from its text alone.

    R7b: a text naming a haematoma or compartment syndrome (it still needs a site word to count);
    R7e: "saddle an(a)esthesia / numbness" in code.text is the saddle group.
    """
    if type(concept) is not dict:
        return []
    text = concept.get("text")
    hay = text if type(text) is str else ""
    codings = concept.get("coding")
    if type(codings) is list:
        for coding in codings:
            display = coding.get("display") if type(coding) is dict else None
            if type(display) is str:
                hay += " " + display
    if not hay or not _ANY_TEXT.search(hay):
        return []
    out = []
    hay = hay.strip()
    if _HAEMATOMA_TEXT.search(hay):
        out.append(_synthetic("red-flag-haematoma", "text", hay))
    if _SADDLE_TEXT.search(hay):
        out.append(_synthetic("cauda-saddle", "text", hay))
    return out


def concept_words(concept: object) -> str:
    """Every text and display of a CodeableConcept (or list of them), lower case."""
    parts: list[str] = []
    concepts = concept if isinstance(concept, list) else [concept]
    for item in concepts:
        if not isinstance(item, Mapping):
            continue
        if isinstance(item.get("text"), str):
            parts.append(item["text"])
        for coding in item.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
                parts.append(coding["display"])
    return " ".join(parts).lower()


def _first_text(concepts: Iterable[object]) -> str:
    """The first text (else display) of the concepts, as written."""
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        if isinstance(concept.get("text"), str) and concept["text"].strip():
            return str(concept["text"]).strip()
        for coding in _list(concept.get("coding")):
            if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
                return str(coding["display"]).strip()
    return ""


@dataclass(frozen=True, slots=True)
class BodySite:
    """What a bodySite element says: matched structures (by value set) and their sides."""

    valuesets: frozenset[str] = frozenset()
    sides: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()  # "valueset:code" of every matched structure

    @property
    def side(self) -> str | None:
        """Side of the structures (bilateral when both), None when unknown."""
        if not self.sides:
            return None
        if "bilateral" in self.sides or {"left", "right"} <= self.sides:
            return "bilateral"
        return next(iter(self.sides))


EMPTY_SITE = BodySite()


def body_site(codes: CodeIndex, value: object) -> BodySite:
    """Structures of a bodySite (one concept or a list): every coding is read.

    A coded structure alone suffices (no display or text needed). The side comes from a lateral
    structure code, a laterality qualifier (7771000 / 24028007 / 51440002) in another coding, or a
    post-coordinated ``<site>:272741003=<side>`` expression.
    """
    sets: set[str] = set()
    sides: set[str] = set()
    found: set[str] = set()
    concepts = value if isinstance(value, list) else [value]
    for concept in concepts:
        if not isinstance(concept, Mapping):
            continue
        for coding in concept.get("coding") or ():
            if not isinstance(coding, Mapping) or not isinstance(coding.get("code"), str):
                continue
            code = coding["code"].replace(" ", "")
            focus, _, refinement = code.partition(":")
            if refinement:
                for attribute in refinement.split(","):
                    name, _, target = attribute.partition("=")
                    if name.split("|")[0] == LATERALITY_ATTRIBUTE:
                        side = QUALIFIER_SIDES.get(target.split("|")[0])
                        if side:
                            sides.add(side)
            for entry in codes.lookup(coding.get("system"), focus.split("|")[0]):
                if entry.valueset in BODY_SITE_VALUESETS:
                    sets.add(entry.valueset)
                    found.add(f"{entry.valueset}:{entry.code}")
                    if entry.laterality:
                        sides.add(entry.laterality)
            if focus in QUALIFIER_SIDES and codes.alias(coding.get("system")) == "snomed":
                sides.add(QUALIFIER_SIDES[focus])
    return BodySite(frozenset(sets), frozenset(sides), frozenset(found))


@dataclass(frozen=True, slots=True)
class ObservedFact:
    """A symptom finding recorded as an Observation (present): R7a, R7d, R7e evidence."""

    ref: str
    time: datetime
    side: str | None
    valuesets: frozenset[str]
    label: str


def finding_present(codes: CodeIndex, r: Mapping[str, object]) -> bool:
    """An Observation finding is present: true, 52101004 Present, or no value (negation-safe)."""
    if r.get("dataAbsentReason") is not None:
        return False
    keys = [k for k in r if k.startswith("value")]
    if not keys:
        return True
    if keys == ["valueBoolean"]:
        return r.get("valueBoolean") is True
    if keys == ["valueCodeableConcept"]:
        found = {
            m.entry.valueset
            for m in codes.match_concept(
                r.get("valueCodeableConcept"), frozenset({"finding-present", "finding-absent"})
            )
        }
        return found == {"finding-present"}
    return False


# --- R7c anticoagulant exposure ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Exposure:
    """An anticoagulant exposure: [start, end] (None = open) and what it was."""

    ref: str
    source: str  # MedicationRequest | MedicationStatement | MedicationAdministration | INR
    label: str
    start: datetime | None
    end: datetime | None

    def overlaps(self, lo: datetime, hi: datetime) -> bool:
        return (self.start is None or self.start <= hi) and (self.end is None or self.end >= lo)


def _list(value: object) -> list[object]:
    """A FHIR repeating element; anything else is treated as absent."""
    return value if isinstance(value, list) else []


def _ref(r: Mapping[str, object]) -> str:
    rid = r.get("id")
    return f"{r.get('resourceType')}/{rid}" if isinstance(rid, str) and rid else ""


def _interval(value: object) -> tuple[datetime, datetime] | None:
    return parse_interval(value)


def _effective(r: Mapping[str, object]) -> tuple[datetime | None, datetime | None] | None:
    """effective[x] as (start, end); None when absent or unreadable."""
    if "effectiveDateTime" in r:
        value = _interval(r.get("effectiveDateTime"))
        return value if value else None
    if "effectivePeriod" in r:
        return period_interval(r.get("effectivePeriod"))
    return None


@functools.lru_cache(maxsize=8)
def _names_regex(names: tuple[str, ...]) -> re.Pattern[str]:
    """Whole-word, case-insensitive alternation of ``names``: built once, not per call."""
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE)


class AnticoagulantReader:
    """Collects R7c exposures while the facts are extracted; references resolved at the end."""

    def __init__(self, content: Content) -> None:
        self.codes = content.codes
        self.names = tuple(content.anticoagulant_names)
        self._name_re = _names_regex(self.names) if self.names else None
        self.inr_min = content.thresholds.inr_anticoagulated
        self.medications: dict[str, Mapping[str, object]] = {}
        self.pending: list[tuple[Mapping[str, object], str]] = []
        self.exposures: list[Exposure] = []

    # drug identification ---------------------------------------------------------------------
    def _concepts(self, r: Mapping[str, object]) -> list[object]:
        concepts: list[object] = [r.get("medicationCodeableConcept")]
        reference = r.get("medicationReference")
        medication: Mapping[str, object] | None = None
        if isinstance(reference, Mapping):
            ref = reference.get("reference")
            if isinstance(reference.get("display"), str):
                concepts.append({"text": reference["display"]})
            if isinstance(ref, str) and ref.startswith("#"):
                for item in _list(r.get("contained")):
                    if isinstance(item, Mapping) and item.get("id") == ref[1:]:
                        medication = item
            elif isinstance(ref, str):
                key = "/".join(ref.split("/_history")[0].rstrip("/").split("/")[-2:])
                medication = self.medications.get(key)
        if medication is not None:
            concepts.append(medication.get("code"))
            for ingredient in _list(medication.get("ingredient")):
                if isinstance(ingredient, Mapping):
                    concepts.append(ingredient.get("itemCodeableConcept"))
        return concepts

    def identify(self, r: Mapping[str, object], extra_text: Iterable[object] = ()) -> str | None:
        """The anticoagulant's label, or None (not an anticoagulant, or a heparin flush / lock)."""
        concepts = self._concepts(r)
        coded: str | None = None
        for concept in concepts:
            for match in self.codes.match_concept(concept, DRUG_SETS):
                if match.entry.valueset == "anticoagulant-flush":
                    return None
                coded = coded or f"{match.display} (RxNorm {match.code})"
        words = " ".join(
            [concept_words(c) for c in concepts] + [t for t in extra_text if isinstance(t, str)]
        )
        if _FLUSH_TEXT.search(words):
            return None
        if coded:
            return coded
        if self._name_re is not None:
            found = self._name_re.search(words)
            if found:
                return _first_text(concepts) or found.group(1).lower()
        return None

    # resources ---------------------------------------------------------------------------------
    def medication(self, r: Mapping[str, object]) -> None:
        rid = r.get("id")
        if isinstance(rid, str) and rid:
            self.medications[f"Medication/{rid}"] = r
            self.medications.setdefault(rid, r)

    def add(self, r: Mapping[str, object], kind: str) -> bool:
        """Queue a MedicationRequest / MedicationStatement / MedicationAdministration.

        Fast reject: a medication given only as text that names no anticoagulant (most of a
        prefetch's drugs) costs one regular-expression search. Returns False when rejected so.
        """
        if "medicationReference" not in r and "contained" not in r:
            med = r.get("medicationCodeableConcept")
            if type(med) is dict and not med.get("coding"):
                text = med.get("text")
                if type(text) is str and (self._name_re is None or not self._name_re.search(text)):
                    return False
        self.pending.append((r, kind))
        return True

    def inr(self, r: Mapping[str, object], time: datetime | None) -> None:
        if r.get("status") not in FINAL_OBSERVATION or time is None:
            return
        quantity = r.get("valueQuantity")
        value = quantity.get("value") if isinstance(quantity, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if value >= self.inr_min:
            self.exposures.append(Exposure(_ref(r), "INR", f"INR {value:g}", time, time))

    def finish(self) -> list[Exposure]:
        for r, kind in self.pending:
            try:
                exposure = self._exposure(r, kind)
            except (AttributeError, TypeError, ValueError, KeyError, IndexError):
                exposure = None
            if exposure is not None:
                self.exposures.append(exposure)
        self.pending.clear()
        return self.exposures

    def _exposure(self, r: Mapping[str, object], kind: str) -> Exposure | None:
        status = r.get("status")
        if kind == "MedicationRequest":
            if r.get("intent") not in REQUEST_INTENTS:
                return None
            notes = [
                d.get("text") for d in _list(r.get("dosageInstruction")) if isinstance(d, dict)
            ]
            label = self.identify(r, notes)
            if label is None:
                return None
            authored = _interval(r.get("authoredOn"))
            if status in REQUEST_OPEN:
                return Exposure(_ref(r), kind, label, authored[0] if authored else None, None)
            if status != "completed":
                return None
            periods = []
            dispense = r.get("dispenseRequest")
            if isinstance(dispense, Mapping):
                periods.append(period_interval(dispense.get("validityPeriod")))
            for dosage in _list(r.get("dosageInstruction")):
                timing = dosage.get("timing") if isinstance(dosage, Mapping) else None
                repeat = timing.get("repeat") if isinstance(timing, Mapping) else None
                if isinstance(repeat, Mapping):
                    periods.append(period_interval(repeat.get("boundsPeriod")))
            for period in periods:
                if period is not None and period[0] is not None and period[1] is not None:
                    return Exposure(_ref(r), kind, label, period[0], period[1])
            return None
        if kind == "MedicationStatement":
            if status not in STATEMENT_OPEN and status != "completed":
                return None
            label = self.identify(
                r, [d.get("text") for d in _list(r.get("dosage")) if isinstance(d, dict)]
            )
            if label is None:
                return None
            effective = _effective(r)
            if effective is None:
                if status == "completed":
                    return None
                return Exposure(_ref(r), kind, label, None, None)
            start, end = effective
            if status in STATEMENT_OPEN and "effectivePeriod" in r and end is None:
                return Exposure(_ref(r), kind, label, start, None)
            if status in STATEMENT_OPEN and "effectiveDateTime" in r:
                return Exposure(_ref(r), kind, label, start, None)  # still taking since then
            return Exposure(_ref(r), kind, label, start, end)
        if kind == "MedicationAdministration":
            if status not in ADMINISTRATION_STATUSES:
                return None
            dosage = r.get("dosage")
            text = dosage.get("text") if isinstance(dosage, Mapping) else None
            label = self.identify(r, [text])
            effective = _effective(r)
            if label is None or effective is None:
                return None
            return Exposure(_ref(r), kind, label, effective[0], effective[1])
        return None
