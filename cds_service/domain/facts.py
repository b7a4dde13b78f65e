"""Plain FHIR JSON -> the few small facts the rules read.

Dispatch is on ``resourceType``. A resource is rejected as early as possible (a code look-up in the
value-set index) before any date is parsed, so a prefetch full of vital signs and unrelated
diagnoses costs little. A resource that is not a JSON object, or whose relevant fields are
malformed, is skipped and counted; nothing here raises.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import ClassVar

from cds_service.domain.codes import CodeIndex, Match, concept_side
from cds_service.domain.content import (
    COMPETING_VALUESETS,
    CONDITION_VALUESETS,
    SYMPTOM_OBSERVATION_VALUESETS,
    Content,
)
from cds_service.domain.fhirtime import is_date_only, parse_interval, period_interval
from cds_service.domain.localtime import injection_zone
from cds_service.domain.mrc import MrcCodes, MrcRow, grade_rank, parse_grade
from cds_service.domain.redflag_facts import (
    EMPTY_SITE,
    AnticoagulantReader,
    BodySite,
    Exposure,
    ObservedFact,
    body_site,
    concept_words,
    finding_present,
    is_flush,
    text_condition_matches,
)

PROCEDURE_SETS = frozenset(
    {
        "procedure-im",
        "procedure-injection-cpt",
        "procedure-subcutaneous",
        "competing-hip",
        "competing-knee",
        "emg-study",
    }
)
SERVICE_REQUEST_SETS = frozenset(
    {
        "pt-existing",
        "emg-referral-existing",
        "emg-study",
        "follow-up-existing",
        "nerve-surgery-existing",
        "orthopaedic-existing",
        "neurology-existing",
        "paediatric-neurology-existing",
        "public-health-existing",
    }
)
#: Value sets of the Conditions read once per (trigger, injection) pair (see Facts.pair_conditions).
PAIR_VALUESETS = COMPETING_VALUESETS | {
    "footdrop-trigger",
    "link-code",
    "radiating-pain",
    "anticoagulation",
}
OBSERVATION_SETS = frozenset(
    {"footdrop-finding", "mrc-dorsiflexion", "bmi", "inr", *SYMPTOM_OBSERVATION_VALUESETS}
)
DEVICE_SETS = frozenset({"afo-existing", "ankle-brace"})
Reasons = tuple[tuple[str, str], ...]  # (value set, label) of coded reasons
#: R4a: value sets a reasonCode of an injection (or of its MedicationRequest) is matched in.
REASON_SETS = frozenset(
    {"competing-radicular", "radicular-back-pain", "radicular-annulus", "radiating-pain"}
)
ROUTE_SETS = frozenset({"route-im", "route-non-im"})
SITE_SETS = frozenset({"injection-site"})
SIDE_SETS = frozenset({"body-laterality"})
KNEE = frozenset({"knee-site"})  # R6a: knee bodySites (any completed knee procedure)
SITE_SIDE_SETS = frozenset({"injection-site"})  # lateral body-site codes (R8b AFO side)
UNCERTAIN_VERIFICATION = frozenset({"unconfirmed", "provisional", "differential"})
CURRENT_CLINICAL = frozenset({"active", "recurrence", "relapse"})
FINAL_OBSERVATION = frozenset({"final", "amended", "corrected"})
ROUTE_SYSTEMS = frozenset({"snomed", "v3-route"})
#: UCUM code (and common unit spellings) of a body mass index value.
BMI_UNITS = frozenset({"kg/m2", "kg/m^2", "kg/m²"})
ACTIVE_MEDICATION_REQUEST = frozenset({"active"})


# --- facts ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConditionFact:
    ref: str
    label: str
    matches: tuple[Match, ...]
    valuesets: frozenset[str]
    clinical: str | None
    verification: str | None
    current: bool  # R0: active/recurrence/relapse, or no clinicalStatus and no abatement
    refuted: bool  # refuted or entered-in-error
    onset_lo: datetime | None  # earliest possible onset (R4); None = unknown
    onset_hi: datetime | None  # latest possible onset (onset, else recordedDate); None = unknown
    has_onset: bool  # onset[x] gave a date (not only recordedDate)
    side: str | None
    site_text: str  # bodySite displays/text and code text, lower case (haematoma site)
    has_site: bool
    evidence_refs: frozenset[str]
    body: BodySite = EMPTY_SITE  # R7 pathways: coded body structures and their sides
    words: str = ""  # every text and display of code and bodySite, lower case
    # R1a (episodes): when it stopped, when it was charted, the ICD-10-CM 7th character
    abated_at: datetime | None = None  # abatement date (else recordedDate for string/age)
    recorded: datetime | None = None
    seventh: str | None = None  # "A" | "D" | "S" of the matched injury code, else None
    has_time: bool = False  # onsetDateTime with a time (R4a: lo is an instant)

    def in_set(self, name: str) -> list[Match]:
        return [m for m in self.matches if m.entry.valueset == name]


@dataclass(frozen=True, slots=True)
class InjectionFact:
    ref: str
    kind: str  # Procedure | MedicationAdministration | Immunization
    time: datetime
    day_only: bool
    evidence: str  # "definite" | "probable"
    site_class: str | None  # None = missing / unrecognised
    site_side: str | None
    site_label: str | None
    drug: str | None
    label: str
    # R4a: the injection's own indication (reasonCode / reasonReference; its MedicationRequest)
    reason_refs: frozenset[str] = frozenset()
    reason_codes: tuple[tuple[str, str], ...] = ()  # (value set, label) of coded reasons
    request_ref: str | None = None


@dataclass(frozen=True, slots=True)
class GradeFact:
    ref: str
    time: datetime
    grade: int  # integer part: comparisons "<= 3" and "grades fallen" use it (R8a)
    side: str | None
    movement: str = "ankle-dorsiflexion"  # R1b: the mapped movement
    sub: str = ""  # R1b/R8a: "+", "-" or "" (4- < 4 < 4+ < 5)

    @property
    def rank(self) -> int:
        return grade_rank(self.grade, self.sub)

    @property
    def text(self) -> str:
        return f"{self.grade}{self.sub}/5"


@dataclass(frozen=True, slots=True)
class FindingFact:
    """A foot-drop finding recorded as an Observation (present)."""

    ref: str
    time: datetime
    side: str | None


@dataclass(frozen=True, slots=True)
class BmiFact:
    """A body mass index measurement (Observation LOINC 39156-5, kg/m2)."""

    ref: str
    time: datetime
    value: float


@dataclass(frozen=True, slots=True)
class OrderFact:
    """An existing DeviceRequest, ServiceRequest or EMG/NCS Procedure."""

    ref: str
    resource: str
    valuesets: frozenset[str]
    status: str | None
    priority: str | None
    authored: datetime | None
    occurrence: datetime | None
    label: str
    text_afo: bool = False  # DeviceRequest text says AFO without an ankle-brace code
    occurrence_end: datetime | None = None  # R8b: occurrencePeriod.end (when it was done)
    side: str | None = None  # R8b: AFO side (parameter, bodySite extension, text)


@dataclass(frozen=True, slots=True)
class AppointmentFact:
    ref: str
    status: str | None
    start: datetime | None
    follow_up: bool
    reason_refs: frozenset[str]


@dataclass(frozen=True, slots=True)
class HipProcedureFact:
    ref: str
    time: datetime
    side: str | None
    label: str
    group: str = "hip"  # R6a: "hip" | "knee"


@dataclass
class Facts:
    """Everything extracted from one prefetch."""

    birth_date: datetime | None = None
    conditions: list[ConditionFact] = field(default_factory=list)
    injections: list[InjectionFact] = field(default_factory=list)
    not_im: list[str] = field(default_factory=list)
    grades: list[GradeFact] = field(default_factory=list)  # ankle dorsiflexion only
    muscle_grades: list[GradeFact] = field(default_factory=list)  # R1b: every mapped movement
    findings: list[FindingFact] = field(default_factory=list)
    orders: list[OrderFact] = field(default_factory=list)
    appointments: list[AppointmentFact] = field(default_factory=list)
    hip_procedures: list[HipProcedureFact] = field(default_factory=list)
    anticoagulant_times: list[tuple[datetime, str]] = field(default_factory=list)
    anticoagulant_orders: list[tuple[str, str]] = field(default_factory=list)  # (ref, drug)
    #: R4a: MedicationRequest reference -> (reasonReference refs, coded reasons)
    request_reasons: dict[str, tuple[frozenset[str], tuple[tuple[str, str], ...]]] = field(
        default_factory=dict
    )
    bmi: list[BmiFact] = field(default_factory=list)
    observed: list[ObservedFact] = field(default_factory=list)  # R7 symptom findings
    exposures: list[Exposure] = field(default_factory=list)  # R7c anticoagulant exposure
    read: int = 0
    skipped: int = 0
    _pair_conditions: tuple[int, list[ConditionFact]] = field(
        default=(-1, []), repr=False, compare=False
    )
    _by_valueset: dict[str, tuple[int, list[ConditionFact]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def conditions_in(self, valueset: str) -> list[ConditionFact]:
        """The Conditions matched in ``valueset`` (cached: rules call this once per trigger)."""
        size, cached = self._by_valueset.get(valueset, (-1, []))
        if size != len(self.conditions):
            cached = [c for c in self.conditions if valueset in c.valuesets]
            self._by_valueset[valueset] = (len(self.conditions), cached)
        return cached

    @property
    def pair_conditions(self) -> list[ConditionFact]:
        """The Conditions a per-(trigger, injection) rule may read: triggers, link codes,
        competing causes, radiating pain, anticoagulation. Rules that run once per pair loop over
        these, not over every Condition (a record of thousands of unrelated problems stays cheap).
        Recomputed when ``conditions`` changes length."""
        size, cached = self._pair_conditions
        if size != len(self.conditions):
            cached = [c for c in self.conditions if c.valuesets & PAIR_VALUESETS]
            self._pair_conditions = (len(self.conditions), cached)
        return cached


class MalformedError(Exception):
    """A relevant resource whose fields cannot be read (skipped and counted)."""


# --- helpers ----------------------------------------------------------------------------------


def _status_code(concept: object) -> str | None:
    """First coding's code of a status CodeableConcept (Condition.clinicalStatus etc.)."""
    if not isinstance(concept, Mapping):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def concept_text(concept: object, matches: Sequence[Match] = ()) -> str:
    if isinstance(concept, Mapping):
        text = concept.get("text")
        if isinstance(text, str) and text.strip():
            return text.strip()
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
                return coding["display"]
    return matches[0].display if matches else ""


def _label(concept: object, matches: Sequence[Match]) -> str:
    """Human label of a coded concept, e.g. "Foot drop, left foot (M21.372)"."""
    if matches:
        m = matches[0]
        return f"{m.display} ({m.code})"
    return concept_text(concept) or "unnamed"


def _concepts(value: object) -> Iterable[Mapping[str, object]]:
    if isinstance(value, Mapping):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping):
                yield item


def _side_of_sites(codes: CodeIndex, value: object) -> tuple[str | None, bool, str]:
    """Side from bodySite concept(s): (side, any site recorded, lower-case site text).

    Left and right foot on one record make it bilateral; a bilateral qualifier too.
    """
    sides: set[str] = set()
    has_site = False
    text_parts: list[str] = []
    for concept in _concepts(value):
        has_site = True
        text_parts.append(concept_text(concept).lower())
        for match in codes.match_concept(concept, SIDE_SETS):
            if match.entry.laterality:
                sides.add(match.entry.laterality)
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral", has_site, " ".join(text_parts)
    return (sides.pop() if sides else None), has_site, " ".join(text_parts)


def _ref(resource: Mapping[str, object]) -> str:
    rid = resource.get("id")
    return f"{resource['resourceType']}/{rid}" if isinstance(rid, str) and rid else ""


def _refs(items: object) -> frozenset[str]:
    out: set[str] = set()
    for item in items if isinstance(items, list) else ():
        if isinstance(item, Mapping) and isinstance(item.get("reference"), str):
            out.add(item["reference"])
    return frozenset(out)


_LEFT_WORDS = re.compile(r"\b(left|lt|l)\b")
_RIGHT_WORDS = re.compile(r"\b(right|rt|r)\b")


def side_from_text(text: str) -> str | None:
    """left / right / bilateral from free text ("L ankle", "right lower limb"); None if neither."""
    low = text.lower()
    if "bilateral" in low or "both" in low.split():
        return "bilateral"
    left, right = bool(_LEFT_WORDS.search(low)), bool(_RIGHT_WORDS.search(low))
    if left and right:
        return "bilateral"
    return "left" if left else "right" if right else None


def other_patient(resource: Mapping[str, object], key: str, patient_id: str) -> bool:
    subject = resource.get(key)
    if not isinstance(subject, Mapping):
        return False
    ref = subject.get("reference")
    if not isinstance(ref, str) or "Patient/" not in ref:
        return False
    return ref.rsplit("Patient/", 1)[1].split("/", 1)[0] != patient_id


def injection_site(codes: CodeIndex, value: object) -> tuple[str | None, str | None, str | None]:
    """(site class, side, label) of an injection site concept (or list of them).

    The first concept decides: a coded site of the ``injection-site`` value set gives its class
    and side; an uncoded one gives only its text as the label; no site gives three Nones.
    """
    for concept in _concepts(value):
        for match in codes.match_concept(concept, SITE_SETS):
            return match.entry.site_class, match.entry.laterality, match.display
        text = concept_text(concept)
        return None, None, text or None
    return None, None, None


def classify_route(codes: CodeIndex, route: object) -> str | None:
    """'im', 'not-im' or None (no coded route) for a route CodeableConcept (R2)."""
    if not isinstance(route, Mapping):
        return None
    matches = codes.match_concept(route, ROUTE_SETS)
    if any(m.entry.valueset == "route-im" for m in matches):
        return "im"
    if matches:
        return "not-im"
    for coding in route.get("coding") or ():
        if isinstance(coding, Mapping) and codes.alias(coding.get("system")) in ROUTE_SYSTEMS:
            return "not-im"  # a coded route that is not intramuscular
    return None


def says_im(*texts: object) -> bool:
    """True when a free text says the route is intramuscular ("IM", "intramuscular")."""
    for text in texts:
        if isinstance(text, str):
            low = text.lower()
            if "intramuscular" in low:
                return True
            words = low.replace(",", " ").replace(".", " ").replace("/", " ").split()
            if "im" in words:
                return True
    return False


def medication_name(resource: Mapping[str, object]) -> str | None:
    """The medication's text of a MedicationRequest / MedicationAdministration, if any."""
    name = concept_text(resource.get("medicationCodeableConcept"))
    if not name:
        reference = resource.get("medicationReference")
        if isinstance(reference, Mapping) and isinstance(reference.get("display"), str):
            name = reference["display"].strip()
    return name or None


def names_anticoagulant(content: Content, text: str | None) -> bool:
    """True when ``text`` (a medication's text or display) names a configured anticoagulant."""
    if not text or not content.anticoagulant_names:
        return False
    return _names_pattern(content.anticoagulant_names).search(text) is not None


@functools.cache
def _names_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    """One compiled alternation of the names (substring match, case-insensitive)."""
    return re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)


# --- per resource type ------------------------------------------------------------------------


class _Extractor:
    def __init__(
        self,
        content: Content,
        patient_id: str,
        now: datetime,
        day_zone: tzinfo = UTC,
        site_zone: tzinfo = UTC,
        mrc: MrcCodes | None = None,
    ) -> None:
        self.day_zone = day_zone  # R0a: date-only values, in the injection's offset
        self.site_zone = site_zone  # R0a: dateTimes written without an offset
        self.codes = content.codes
        self.content = content
        self.patient_id = patient_id
        self.now = now
        self.oldest = now - content.thresholds.lookback
        self.facts = Facts()
        self.mrc = mrc or MrcCodes()
        self.saw_date_only = False
        self.seen: set[tuple[str, str]] = set()
        self.ma_im_procedures: set[str] = set()
        self.cpt_procedures: list[tuple[Mapping[str, object], str]] = []
        self.anticoagulants = AnticoagulantReader(content)

    def _iv(self, value: object) -> tuple[datetime, datetime] | None:
        if not self.saw_date_only and is_date_only(value):
            self.saw_date_only = True  # R0a: the day zone matters for this request
        return parse_interval(value, self.day_zone, self.site_zone)

    def _period(self, value: object) -> tuple[datetime | None, datetime | None] | None:
        return period_interval(value, self.day_zone, self.site_zone)

    def add(self, resource: object) -> None:
        if type(resource) is not dict and not isinstance(resource, Mapping):  # dict: no ABC check
            self.facts.skipped += 1
            return
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            self.facts.skipped += 1
            return
        rid = resource.get("id")
        if isinstance(rid, str):
            key = (rtype, rid)
            if key in self.seen:
                return  # the same resource from two prefetch keys
            self.seen.add(key)
        self.facts.read += 1
        handler = self._handlers.get(rtype)
        if handler is None:
            return
        try:
            handler(self, resource)
        except (MalformedError, AttributeError, TypeError, ValueError, KeyError, IndexError):
            self.facts.read -= 1
            self.facts.skipped += 1

    # Patient ------------------------------------------------------------------------------
    def patient(self, r: Mapping[str, object]) -> None:
        rid = r.get("id")
        if isinstance(rid, str) and rid != self.patient_id:
            return
        birth = parse_interval(r.get("birthDate"), self.site_zone)
        if birth is not None:
            self.facts.birth_date = birth[0]

    # Condition ----------------------------------------------------------------------------
    def condition(self, r: Mapping[str, object]) -> None:
        code = r.get("code")
        matches = self.codes.match_concept(code, CONDITION_VALUESETS) or text_condition_matches(
            code
        )
        if not matches or other_patient(r, "subject", self.patient_id):
            return
        verification = _status_code(r.get("verificationStatus"))
        clinical = _status_code(r.get("clinicalStatus"))
        abated = any(
            r.get(k) is not None
            for k in (
                "abatementDateTime",
                "abatementAge",
                "abatementPeriod",
                "abatementRange",
                "abatementString",
                "abatementBoolean",
            )
        )
        if r.get("abatementBoolean") is False:
            abated = False
        refuted = verification in ("refuted", "entered-in-error") or clinical == "entered-in-error"
        current = not refuted and (
            clinical in CURRENT_CLINICAL if clinical is not None else not abated
        )
        if clinical in CURRENT_CLINICAL and abated:
            current = False  # con-4: an abatement means the condition is not current
        lo: datetime | None = None
        hi: datetime | None = None
        has_onset = False
        if "onsetDateTime" in r:
            onset = self._iv(r.get("onsetDateTime"))
            if onset is not None:
                lo, hi = onset
                has_onset = True
        elif "onsetPeriod" in r:
            period = self._period(r.get("onsetPeriod"))
            if period is not None:
                start, end = period
                if start is not None and end is None:
                    lo, hi = start, start
                else:
                    lo, hi = start, end
                has_onset = hi is not None
        if hi is None:
            recorded = self._iv(r.get("recordedDate"))
            lo = None
            hi = recorded[1] if recorded else None
            has_onset = False
        code_side = concept_side(matches)
        conflicts = len({m.entry.laterality for m in matches if m.entry.laterality}) > 1
        body_side, has_site, site_text = _side_of_sites(self.codes, r.get("bodySite"))
        if conflicts or (code_side and body_side and code_side != body_side):
            side = None  # conflicting sides inside one record: never pick one (R5)
        else:
            side = code_side or body_side
        evidence: set[str] = set()
        for item in _items(r.get("evidence")):
            if isinstance(item, Mapping):
                evidence |= _refs(item.get("detail"))
        recorded_iv = self._iv(r.get("recordedDate"))
        recorded_at = recorded_iv[0] if recorded_iv else None
        abated_at = self._abatement(r, recorded_at) if (abated or not current) else None
        seventh = _seventh(matches)
        self.facts.conditions.append(
            ConditionFact(
                ref=_ref(r),
                label=_label(code, matches),
                matches=tuple(matches),
                valuesets=frozenset(m.entry.valueset for m in matches),
                clinical=clinical,
                verification=verification,
                current=current,
                refuted=refuted,
                onset_lo=lo,
                onset_hi=hi,
                has_onset=has_onset,
                side=side,
                site_text=site_text + " " + concept_text(code).lower(),
                has_site=has_site,
                evidence_refs=frozenset(evidence),
                body=body_site(self.codes, r.get("bodySite")),
                words=concept_words(code) + " " + concept_words(r.get("bodySite")),
                abated_at=abated_at,
                recorded=recorded_at,
                seventh=seventh,
                has_time=has_onset and lo is not None and lo == hi,
            )
        )

    def _abatement(self, r: Mapping[str, object], recorded: datetime | None) -> datetime | None:
        """R1a: abatementDateTime, abatementPeriod.end, else (string, age ...) the recordedDate."""
        when = self._iv(r.get("abatementDateTime"))
        if when is not None:
            return when[0]
        period = self._period(r.get("abatementPeriod"))
        if period is not None and (period[1] or period[0]) is not None:
            return period[1] or period[0]
        return recorded

    # Observation --------------------------------------------------------------------------
    def observation(self, r: Mapping[str, object]) -> None:
        code = r.get("code")
        matches = self.codes.match_concept(code, OBSERVATION_SETS)
        mrc_row = self.mrc.lookup(code) if not matches else None
        if mrc_row is not None:
            if other_patient(r, "subject", self.patient_id):
                return
            if r.get("status") in FINAL_OBSERVATION:
                self._mrc_grade(r, mrc_row)
            return
        if not matches or other_patient(r, "subject", self.patient_id):
            return
        if r.get("status") not in FINAL_OBSERVATION:
            return
        if all(m.entry.valueset == "bmi" for m in matches):
            self._bmi(r)
            return
        time = self._observation_time(r)
        if time is None:
            raise MalformedError("observation without a time")
        sets = {m.entry.valueset for m in matches}
        if "inr" in sets:
            if self.oldest <= time <= self.now:
                self.anticoagulants.inr(r, time)
            return
        side, _, _ = _side_of_sites(self.codes, r.get("bodySite"))
        symptoms = sets & SYMPTOM_OBSERVATION_VALUESETS
        if symptoms:
            if self.oldest <= time and finding_present(self.codes, r):
                site = body_site(self.codes, r.get("bodySite"))
                self.facts.observed.append(
                    ObservedFact(
                        _ref(r), time, side or site.side, frozenset(symptoms), _label(code, matches)
                    )
                )
            if not sets - symptoms:
                return
        if "mrc-dorsiflexion" in sets:
            self._mrc_grade(r, MrcRow("", "", "ankle-dorsiflexion"))
            return
        if r.get("dataAbsentReason") is not None:
            return
        value_keys = [k for k in r if k.startswith("value")]
        if not value_keys:
            present = True
        elif value_keys == ["valueBoolean"]:
            present = r.get("valueBoolean") is True
        elif value_keys == ["valueCodeableConcept"]:
            found = {
                m.entry.valueset
                for m in self.codes.match_concept(
                    r.get("valueCodeableConcept"), frozenset({"finding-present", "finding-absent"})
                )
            }
            present = found == {"finding-present"}
        else:
            present = False
        if present and time >= self.oldest:
            self.facts.findings.append(FindingFact(_ref(r), time, side))

    def _mrc_grade(self, r: Mapping[str, object], row: MrcRow) -> None:
        """R1b: an MRC grade; side from the mapped row, else bodySite, else bodySite/code text."""
        time = self._observation_time(r)
        if time is None:
            raise MalformedError("observation without a time")
        parsed = parse_grade(r)
        if parsed is None:
            if "valueInteger" in r or "valueQuantity" in r:
                raise MalformedError("MRC grade must be 0-5")
            return  # "weak", "normal": not a grade
        side = row.side
        if side is None:
            side, _, site_text = _side_of_sites(self.codes, r.get("bodySite"))
            if side is None:
                side = side_from_text(site_text + " " + concept_text(r.get("code")).lower())
        if time < self.oldest:
            return
        grade = GradeFact(_ref(r), time, parsed[0], side, row.movement, parsed[1])
        self.facts.muscle_grades.append(grade)
        if row.movement == "ankle-dorsiflexion":
            self.facts.grades.append(grade)

    def _bmi(self, r: Mapping[str, object]) -> None:
        """A BMI in kg/m2 (prevention risk factor); an unreadable one is ignored, never fatal.

        Ignoring rather than counting it as skipped keeps the patient-view counts unchanged when a
        client sends vital signs the foot-drop rules do not read.
        """
        quantity = r.get("valueQuantity")
        if not isinstance(quantity, Mapping):
            return
        value = quantity.get("value")
        units = {quantity.get("code"), quantity.get("unit")} - {None}
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            return
        if not units or not any(isinstance(u, str) and u.lower() in BMI_UNITS for u in units):
            return
        time = self._observation_time(r)
        if time is not None and self.oldest <= time <= self.now:
            self.facts.bmi.append(BmiFact(_ref(r), time, float(value)))

    def _observation_time(self, r: Mapping[str, object]) -> datetime | None:
        if "effectiveDateTime" in r:
            value = self._iv(r.get("effectiveDateTime"))
            return value[1] if value and value[0] != value[1] else (value[0] if value else None)
        period = self._period(r.get("effectivePeriod"))
        if period is not None:
            return period[1] or period[0]
        issued = self._iv(r.get("issued"))
        return issued[0] if issued else None

    # Injections ---------------------------------------------------------------------------
    def _anticoagulant(self, r: Mapping[str, object], drug: str | None, time: datetime) -> None:
        if drug and names_anticoagulant(self.content, drug) and not is_flush(drug):
            self.facts.anticoagulant_times.append((time, drug))

    def _injection(
        self,
        r: Mapping[str, object],
        kind: str,
        when: tuple[datetime, datetime] | None,
        route: object,
        site: object,
        drug: str | None,
        route_text: tuple[object, ...],
        label: str,
    ) -> None:
        if when is None:
            raise MalformedError("injection without a time")
        time, day_only = when[0], when[0] != when[1]
        if time < self.oldest or time > self.now:
            return
        route_class = classify_route(self.codes, route)
        site_class, site_side, site_label = injection_site(self.codes, site)
        if route_class == "im":
            evidence = "definite"
        elif route_class == "not-im":
            self.facts.not_im.append(_ref(r))
            return
        elif site_class in ("gluteal", "ventrogluteal") or says_im(*route_text):
            evidence = "probable"
        else:
            self.facts.not_im.append(_ref(r))
            return
        reason_refs, reason_codes = self._reasons(r)
        request = r.get("request")
        request_ref = request.get("reference") if isinstance(request, Mapping) else None
        self.facts.injections.append(
            InjectionFact(
                ref=_ref(r),
                kind=kind,
                time=time,
                day_only=day_only,
                evidence=evidence,
                site_class=site_class,
                site_side=site_side,
                site_label=site_label,
                drug=drug,
                label=label,
                reason_refs=reason_refs,
                reason_codes=reason_codes,
                request_ref=request_ref if isinstance(request_ref, str) else None,
            )
        )

    def medication_administration(self, r: Mapping[str, object]) -> None:
        if other_patient(r, "subject", self.patient_id):
            return
        maybe_anticoagulant = self.anticoagulants.add(r, "MedicationAdministration")
        if r.get("status") != "completed":
            return
        dosage = r.get("dosage")
        dosage = dosage if isinstance(dosage, Mapping) else {}
        medication = r.get("medicationCodeableConcept")
        drug = concept_text(medication) or None
        if "effectiveDateTime" in r:
            when = self._iv(r.get("effectiveDateTime"))
        else:
            period = self._period(r.get("effectivePeriod"))
            when = (period[0], period[0]) if period and period[0] else None
        if maybe_anticoagulant and drug and when is not None:
            self._anticoagulant(r, drug, when[0])
        route = dosage.get("route")
        site = dosage.get("site")
        if route is None and site is None and not says_im(dosage.get("text"), drug):
            return  # an oral drug or an infusion: not an injection we can use
        route_text = (
            route.get("text") if isinstance(route, Mapping) else None,
            dosage.get("text"),
        )
        im_route = classify_route(self.codes, route) == "im"
        for part in _items(r.get("partOf")):
            if im_route and isinstance(part, Mapping) and isinstance(part.get("reference"), str):
                self.ma_im_procedures.add(part["reference"])
        self._injection(
            r,
            "MedicationAdministration",
            when,
            route,
            site,
            drug,
            route_text,
            drug or "Medication administration",
        )

    def immunization(self, r: Mapping[str, object]) -> None:
        if r.get("status") != "completed" or other_patient(r, "patient", self.patient_id):
            return
        vaccine = concept_text(r.get("vaccineCode")) or None
        route = r.get("route")
        route_text = (route.get("text") if isinstance(route, Mapping) else None,)
        when = self._iv(r.get("occurrenceDateTime"))
        self._injection(
            r,
            "Immunization",
            when,
            route,
            r.get("site"),
            vaccine,
            route_text,
            vaccine or "Immunization",
        )

    def procedure(self, r: Mapping[str, object]) -> None:
        code = r.get("code")
        matches = self.codes.match_concept(code, PROCEDURE_SETS)
        if not matches:
            self._knee_procedure(r, code)
            return
        if other_patient(r, "subject", self.patient_id):
            return
        status = r.get("status")
        if status == "entered-in-error":
            return
        sets = {m.entry.valueset for m in matches}
        if "performedDateTime" in r:
            when = self._iv(r.get("performedDateTime"))
        else:
            period = self._period(r.get("performedPeriod"))
            when = (period[0], period[0]) if period and period[0] else None
        label = _label(code, matches)
        if "emg-study" in sets:
            if status in ("completed", "in-progress") and when is not None:
                self.facts.orders.append(
                    OrderFact(
                        _ref(r), "Procedure", frozenset(sets), status, None, None, when[0], label
                    )
                )
            return
        if sets & {"competing-hip", "competing-knee"}:
            if status == "completed" and when is not None:
                side, _, _ = _side_of_sites(self.codes, r.get("bodySite"))
                side = side or concept_side(matches)  # R6a: ICD-10-PCS 4th character
                group = "hip" if "competing-hip" in sets else "knee"
                self.facts.hip_procedures.append(
                    HipProcedureFact(_ref(r), when[0], side, label, group)
                )
            return
        if status != "completed":
            return
        if "procedure-subcutaneous" in sets and "procedure-im" not in sets:
            self.facts.not_im.append(_ref(r))
            return
        if "procedure-im" in sets:
            self._injection(
                r,
                "Procedure",
                when,
                {"coding": [{"system": "http://snomed.info/sct", "code": "78421000"}]},
                r.get("bodySite"),
                None,
                (),
                label,
            )
            return
        # CPT 96372 (SC or IM): decided after all MedicationAdministrations are seen.
        self.cpt_procedures.append((r, label))

    def _knee_procedure(self, r: Mapping[str, object], code: object) -> None:
        """R6a: any completed Procedure on a knee bodySite, or whose code text says "knee"."""
        if r.get("status") != "completed" or other_patient(r, "subject", self.patient_id):
            return
        sites = [m for c in _concepts(r.get("bodySite")) for m in self.codes.match_concept(c, KNEE)]
        text = concept_text(code).lower() if isinstance(code, Mapping) else ""
        if not sites and not re.search(r"\bknee\b", text):
            return
        if "performedDateTime" in r:
            when = self._iv(r.get("performedDateTime"))
        else:
            period = self._period(r.get("performedPeriod"))
            when = (period[0], period[0]) if period and period[0] else None
        if when is None:
            return
        side = concept_side(sites) or side_from_text(text)
        label = concept_text(code) or "Knee procedure"
        self.facts.hip_procedures.append(HipProcedureFact(_ref(r), when[0], side, label, "knee"))

    def _finish_cpt(self) -> None:
        for r, label in self.cpt_procedures:
            when = None
            if "performedDateTime" in r:
                when = self._iv(r.get("performedDateTime"))
            else:
                period = self._period(r.get("performedPeriod"))
                when = (period[0], period[0]) if period and period[0] else None
            route = None
            if _ref(r) in self.ma_im_procedures:
                route = {"coding": [{"system": "http://snomed.info/sct", "code": "78421000"}]}
            try:
                self._injection(r, "Procedure", when, route, r.get("bodySite"), None, (), label)
            except MalformedError:
                self.facts.read -= 1
                self.facts.skipped += 1

    # Orders -------------------------------------------------------------------------------
    def _reasons(self, r: Mapping[str, object]) -> tuple[frozenset[str], Reasons]:
        """R4a: reasonReference targets and coded reasons (radicular / back-pain value sets)."""
        coded: list[tuple[str, str]] = []
        for concept in _concepts(r.get("reasonCode")):
            matches = self.codes.match_concept(concept, REASON_SETS)
            coded += [(m.entry.valueset, _label(concept, [m])) for m in matches]
        return _refs(r.get("reasonReference")), tuple(dict.fromkeys(coded))

    def medication_request(self, r: Mapping[str, object]) -> None:
        """R4a reasons, R7c exposure, and (active, by name) a prevention anticoagulant."""
        if other_patient(r, "subject", self.patient_id):
            return
        ref = _ref(r)
        refs, coded = self._reasons(r)
        if ref and (refs or coded):
            self.facts.request_reasons[ref] = (refs, coded)
        self.anticoagulants.add(r, "MedicationRequest")
        if r.get("status") not in ACTIVE_MEDICATION_REQUEST:
            return
        drug = medication_name(r)
        if drug and names_anticoagulant(self.content, drug):
            self.facts.anticoagulant_orders.append((_ref(r), drug))

    def medication_statement(self, r: Mapping[str, object]) -> None:
        """R7c: a MedicationStatement of an anticoagulant (outpatient medication lists)."""
        if not other_patient(r, "subject", self.patient_id):
            self.anticoagulants.add(r, "MedicationStatement")

    def medication(self, r: Mapping[str, object]) -> None:
        """A Medication resource, for MedicationRequest/Statement.medicationReference (R7c)."""
        self.anticoagulants.medication(r)

    def device_request(self, r: Mapping[str, object]) -> None:
        concept = r.get("codeCodeableConcept")
        matches = self.codes.match_concept(concept, DEVICE_SETS)
        text = concept_text(concept).lower() if isinstance(concept, Mapping) else ""
        says_afo = (
            "ankle foot orthosis" in text
            or "ankle-foot orthosis" in text
            or ("afo" in text.replace("(", " ").replace(")", " ").split())
        )
        if not matches and not says_afo:
            return
        if other_patient(r, "subject", self.patient_id):
            return
        sets = frozenset(m.entry.valueset for m in matches)
        authored = self._iv(r.get("authoredOn"))
        start, end = self._occurrence(r)
        self.facts.orders.append(
            OrderFact(
                ref=_ref(r),
                resource="DeviceRequest",
                valuesets=sets,
                status=_string(r.get("status")),
                priority=_string(r.get("priority")),
                authored=authored[0] if authored else None,
                occurrence=start,
                label=_label(concept, matches),
                text_afo=says_afo and "ankle-brace" not in sets,
                occurrence_end=end,
                side=self._device_side(r, concept),
            )
        )

    def _occurrence(self, r: Mapping[str, object]) -> tuple[datetime | None, datetime | None]:
        """(start, end) of occurrenceDateTime / occurrencePeriod (R8b recency)."""
        if "occurrenceDateTime" in r:
            occ = self._iv(r.get("occurrenceDateTime"))
            return (occ[0], occ[0]) if occ else (None, None)
        period = self._period(r.get("occurrencePeriod"))
        return period if period else (None, None)

    def _device_side(self, r: Mapping[str, object], concept: object) -> str | None:
        """R8b: AFO side from parameter codes, a bodySite extension, then the text."""
        concepts: list[object] = []
        texts: list[str] = [concept_text(concept)]
        for parameter in _items(r.get("parameter")):
            if isinstance(parameter, Mapping):
                concepts += [parameter.get("code"), parameter.get("valueCodeableConcept")]
        for extension in _items(r.get("extension")):
            if isinstance(extension, Mapping) and "bodysite" in str(extension.get("url")).lower():
                concepts.append(extension.get("valueCodeableConcept"))
        sides: set[str] = set()
        for item in concepts:
            for match in self.codes.match_concept(item, SIDE_SETS | SITE_SIDE_SETS):
                if match.entry.laterality:
                    sides.add(match.entry.laterality)
            if isinstance(item, Mapping):
                texts.append(concept_text(item))
        for note in _items(r.get("note")):
            if isinstance(note, Mapping) and isinstance(note.get("text"), str):
                texts.append(note["text"])
        if "bilateral" in sides or {"left", "right"} <= sides:
            return "bilateral"
        if sides:
            return sides.pop()
        return side_from_text(" ".join(t for t in texts if t))

    def service_request(self, r: Mapping[str, object]) -> None:
        code = r.get("code")
        matches = self.codes.match_concept(code, SERVICE_REQUEST_SETS)
        if not matches or other_patient(r, "subject", self.patient_id):
            return
        authored = self._iv(r.get("authoredOn"))
        occurrence_end = self._occurrence(r)[1]
        if "occurrenceDateTime" in r:
            occ = self._iv(r.get("occurrenceDateTime"))
            occurrence = occ[0] if occ else None
        else:
            period = self._period(r.get("occurrencePeriod"))
            occurrence = period[0] if period else None
            if occurrence is None:
                timing = r.get("occurrenceTiming")
                if isinstance(timing, Mapping):
                    events = timing.get("event")
                    if isinstance(events, list) and events:
                        occurrence = (self._iv(events[0]) or (None,))[0]
        self.facts.orders.append(
            OrderFact(
                ref=_ref(r),
                resource="ServiceRequest",
                valuesets=frozenset(m.entry.valueset for m in matches),
                status=_string(r.get("status")),
                priority=_string(r.get("priority")),
                authored=authored[0] if authored else None,
                occurrence=occurrence,
                label=_label(code, matches),
                occurrence_end=occurrence_end,
            )
        )

    def appointment(self, r: Mapping[str, object]) -> None:
        follow = bool(
            self.codes.match_concept(r.get("appointmentType"), frozenset({"follow-up-existing"}))
        )
        for key in ("serviceType", "reasonCode"):
            for concept in _concepts(r.get(key)):
                if self.codes.match_concept(concept, frozenset({"follow-up-existing"})):
                    follow = True
        reasons = _refs(r.get("reasonReference"))
        if not follow and not reasons:
            return
        start = self._iv(r.get("start"))
        self.facts.appointments.append(
            AppointmentFact(
                ref=_ref(r),
                status=_string(r.get("status")),
                start=start[0] if start else None,
                follow_up=follow,
                reason_refs=reasons,
            )
        )

    _handlers: ClassVar[dict[str, Callable[[_Extractor, Mapping[str, object]], None]]] = {
        "Patient": patient,
        "Condition": condition,
        "Observation": observation,
        "MedicationAdministration": medication_administration,
        "MedicationRequest": medication_request,
        "MedicationStatement": medication_statement,
        "Medication": medication,
        "Immunization": immunization,
        "Procedure": procedure,
        "DeviceRequest": device_request,
        "ServiceRequest": service_request,
        "Appointment": appointment,
    }


def extract_facts(
    resources: Iterable[object],
    content: Content,
    patient_id: str,
    now: datetime,
    site_zone: tzinfo = UTC,
    mrc: MrcCodes | None = None,
) -> Facts:
    """Read every resource once; irrelevant ones cost a code look-up, malformed ones are counted.

    Date-only values are read in the injection's offset (R0a, :func:`localtime.injection_zone`).
    """
    resources = resources if isinstance(resources, list | tuple) else list(resources)
    mrc = mrc or MrcCodes(content.mrc_rows)

    def read(zone: tzinfo) -> _Extractor:
        extractor = _Extractor(content, patient_id, now, zone, site_zone, mrc)
        for resource in resources:
            extractor.add(resource)
        extractor._finish_cpt()
        return extractor

    extractor = read(site_zone)
    zone = injection_zone(((i.time, i.day_only) for i in extractor.facts.injections), site_zone)
    if zone is not site_zone and extractor.saw_date_only:
        extractor = read(zone)  # R0a: date-only values in the injection's offset
    extractor.facts.exposures = extractor.anticoagulants.finish()
    return _in_canonical_order(extractor.facts)


def _in_canonical_order(facts: Facts) -> Facts:
    """Sort every fact list by a stable key, so no rule can depend on the order of the prefetch."""
    for name in (
        "conditions",
        "injections",
        "not_im",
        "grades",
        "muscle_grades",
        "findings",
        "orders",
        "appointments",
        "hip_procedures",
        "anticoagulant_times",
        "anticoagulant_orders",
        "bmi",
        "observed",
        "exposures",
    ):
        _sort_canonically(getattr(facts, name))
    return facts


def _sort_canonically(items: list[object]) -> None:
    """Sort in place by (ref, repr), stably; repr (costly for nested facts) only for equal refs."""
    if len(items) < 2:
        return
    runs: dict[str, list[object]] = {}
    for item in items:
        runs.setdefault(str(getattr(item, "ref", "")), []).append(item)
    ordered: list[object] = []
    for ref in sorted(runs):
        run = runs[ref]
        ordered.extend(sorted(run, key=repr) if len(run) > 1 else run)
    items[:] = ordered


def _seventh(matches: Sequence[Match]) -> str | None:
    """The 7th character (A initial, D subsequent, S sequela) of a matched ICD-10-CM injury code."""
    for m in matches:
        if m.entry.system != "icd10cm":
            continue
        code = m.code.replace(".", "").upper()
        if len(code) == 7 and code[0] in "ST" and code[-1] in "ADSBC":
            return code[-1]
    return None


def _string(value: object) -> str | None:
    """A FHIR primitive that must be a string; anything else is treated as absent."""
    return value if isinstance(value, str) else None


def _items(value: object) -> list[object]:
    """A FHIR repeating element; a malformed (non-list) value is treated as absent."""
    return value if isinstance(value, list) else []
