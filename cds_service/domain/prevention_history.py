"""Past injection neuropathies for the prevention services (clinical.md §4.6.6, §4.6.13).

A *documented injection neuropathy* that makes an order-select / order-sign card a ``warning``
includes a past event judged **at the time it happened**: a foot-drop trigger Condition — a sequela
code (7th character S, e.g. S74.02XS) included — or a foot-drop finding Observation (present), whose
onset (effective time) lies 0–14 days (calendar days, R0a:
each date as written, in its own offset) after a definite or probable IM injection into a gluteal
site on that side, however many years ago. Patient-view's 24-month look-back and R1a ("sequela
codes never start an attribution") do not apply here: the prevention services read the whole
record.

The record is read afresh from the raw resources (the patient-view facts drop injections older
than the look-back). A Condition that is refuted or entered in error never counts; a resolved or
inactive one does (a *past* event is documented history: the nerve was injured by a gluteal
injection on that side). Sides: a lateral trigger and a lateral injection must agree; when one of
them has no side the event counts on the other's side; when neither has one its side is unknown.

Pure: ``now`` is passed in; nothing here raises on malformed input (such resources are skipped).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cds_service.domain.codes import Match, concept_side
from cds_service.domain.content import Content
from cds_service.domain.facts import (
    classify_route,
    concept_text,
    injection_site,
    other_patient,
)
from cds_service.domain.prevention_sites import text_site

__all__ = ["PastNeuropathy", "past_injection_neuropathies"]

#: Days after the injection within which the onset must lie (§4.6.6: 0–14 days).
ONSET_AFTER_INJECTION_DAYS = 14
#: An onset coarser than this (a year, a wide period) cannot be placed after an injection.
MAX_ONSET_WIDTH = timedelta(days=31)
GLUTEAL_CLASSES = frozenset({"gluteal", "ventrogluteal"})
_FINDING = frozenset({"footdrop-finding"})
_UNREADABLE = (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError)


@dataclass(frozen=True)
class _When:
    """A FHIR date/dateTime as written: local dates (first, last) and the instant if timed."""

    first: date
    last: date
    instant: datetime | None


def _when(value: object) -> _When | None:
    """Read a FHIR date / dateTime without converting to UTC (R0a: the local date as written)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            year = int(text)
            return _When(date(year, 1, 1), date(year, 12, 31), None)
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:])
            first = date(year, month, 1)
            nxt = date(year + month // 12, month % 12 + 1, 1)
            return _When(first, nxt - timedelta(days=1), None)
        day = date.fromisoformat(text[:10])
        if len(text) == 10:
            return _When(day, day, None)
        if text[10] != "T":
            return None
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except _UNREADABLE:
        return None
    return _When(day, day, instant)


@dataclass(frozen=True)
class _PastInjection:
    ref: str
    when: _When
    side: str | None
    label: str


@dataclass(frozen=True)
class PastNeuropathy:
    """A foot-drop trigger that began 0–14 days after a gluteal IM injection on its side."""

    ref: str
    label: str
    side: str | None  # left | right | bilateral | None (not documented)
    onset: date
    days: int  # calendar days from the injection to the onset
    injection_ref: str
    injection_label: str
    injection_date: date
    current: bool
    abated: str | None  # the abatement date as written, for a resolved Condition
    clinical: str | None = None  # clinicalStatus code (resolved, inactive, remission ...)
    basis: str = "past-event"


def _status(concept: object) -> str | None:
    if isinstance(concept, Mapping):
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def _ref(resource: Mapping[str, object]) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType')}/{rid}" if isinstance(rid, str) and rid else ""


def _first_concept(value: object) -> object:
    return value[0] if isinstance(value, list) and value else value


def _gluteal(content: Content, site: object, *texts: object) -> tuple[bool, str | None, str]:
    """(gluteal site, side, label) from a coded site, else from its text / the given texts."""
    site_class, side, label = injection_site(content.codes, site)
    if site_class is None:
        concept = _first_concept(site)
        site_text = concept_text(concept) if isinstance(concept, Mapping) else None
        site_class, side, label = text_site((site_text, *texts))
    return site_class in GLUTEAL_CLASSES, side, label or ""


def _injections(
    resources: Iterable[Mapping[str, object]], content: Content, patient_id: str
) -> list[_PastInjection]:
    out: list[_PastInjection] = []
    for r in resources:
        try:
            found = _injection(r, content, patient_id)
        except _UNREADABLE:
            continue
        if found is not None:
            out.append(found)
    return out


def _injection(r: Mapping[str, object], content: Content, patient_id: str) -> _PastInjection | None:
    rtype = r.get("resourceType")
    codes = content.codes
    if rtype == "MedicationAdministration":
        if r.get("status") not in ("completed", "in-progress"):
            return None
        if other_patient(r, "subject", patient_id):
            return None
        dosage = r.get("dosage") if isinstance(r.get("dosage"), Mapping) else {}
        assert isinstance(dosage, Mapping)
        route, site = dosage.get("route"), dosage.get("site")
        period = r.get("effectivePeriod")
        when = _when(r.get("effectiveDateTime")) or (
            _when(period.get("start")) if isinstance(period, Mapping) else None
        )
        drug = concept_text(r.get("medicationCodeableConcept")) or "IM injection"
        texts: tuple[object, ...] = (dosage.get("text"),)
    elif rtype == "Immunization":
        if r.get("status") != "completed" or other_patient(r, "patient", patient_id):
            return None
        route, site = r.get("route"), r.get("site")
        when = _when(r.get("occurrenceDateTime"))
        drug = concept_text(r.get("vaccineCode")) or "Immunization"
        texts = ()
    elif rtype == "Procedure":
        if r.get("status") != "completed" or other_patient(r, "subject", patient_id):
            return None
        matches = codes.match_concept(
            r.get("code"), frozenset({"procedure-im", "procedure-injection-cpt"})
        )
        if not matches:
            return None
        definite = any(m.entry.valueset == "procedure-im" for m in matches)
        im = {"coding": [{"system": codes.uri("snomed"), "code": "78421000"}]}
        route = im if definite else None
        site = r.get("bodySite")
        period = r.get("performedPeriod")
        when = _when(r.get("performedDateTime")) or (
            _when(period.get("start")) if isinstance(period, Mapping) else None
        )
        drug = concept_text(r.get("code")) or "IM injection"
        texts = ()
    else:
        return None
    if when is None:
        return None
    gluteal, side, label = _gluteal(content, site, *texts)
    if not gluteal:
        return None
    route_class = classify_route(codes, route)
    if route_class == "not-im":
        return None
    # definite (coded IM route) or probable (no coded route but a gluteal site, R2)
    where = f" ({label})" if label else ""
    return _PastInjection(_ref(r), when, side, f"{drug}{where}")


def _onset(r: Mapping[str, object]) -> _When | None:
    """The Condition's onset as written; a recordedDate only bounds it (used only as a day)."""
    if "onsetDateTime" in r:
        return _when(r.get("onsetDateTime"))
    period = r.get("onsetPeriod")
    if isinstance(period, Mapping):
        start, end = _when(period.get("start")), _when(period.get("end"))
        if start is not None:
            last = end.last if end is not None else start.last
            return _When(start.first, last, start.instant if end is None else None)
        return None
    recorded = _when(r.get("recordedDate"))
    # no onset[x]: the onset lies on or before the recorded date; usable only as that day
    return _When(recorded.last, recorded.last, None) if recorded else None


def _finding_present(content: Content, r: Mapping[str, object]) -> bool:
    """A final foot-drop finding Observation that says the finding is present (as R1 reads it)."""
    if r.get("status") not in ("final", "amended", "corrected"):
        return False
    if r.get("dataAbsentReason") is not None:
        return False
    values = [k for k in r if k.startswith("value")]
    if not values:
        return True
    if values == ["valueBoolean"]:
        return r.get("valueBoolean") is True
    if values == ["valueCodeableConcept"]:
        found = {
            m.entry.valueset
            for m in content.codes.match_concept(
                r.get("valueCodeableConcept"), frozenset({"finding-present", "finding-absent"})
            )
        }
        return found == {"finding-present"}
    return False


def _effective(r: Mapping[str, object]) -> _When | None:
    """An Observation's effective time (the start of a period), as written."""
    if "effectiveDateTime" in r:
        return _when(r.get("effectiveDateTime"))
    period = r.get("effectivePeriod")
    if isinstance(period, Mapping):
        return _when(period.get("start")) or _when(period.get("end"))
    return None


def _days_after(onset: _When, injection: _When) -> int | None:
    """Calendar days from the injection to the onset when the onset lies 0–14 days after it."""
    if onset.last - onset.first > MAX_ONSET_WIDTH:
        return None
    a, b = onset.instant, injection.instant
    # both timed with (or both without) an offset: instants; else local dates only (R0a)
    if a is not None and b is not None and (a.tzinfo is None) == (b.tzinfo is None):
        if a < b:
            return None
        days = (onset.first - injection.first).days
        return days if 0 <= days <= ONSET_AFTER_INJECTION_DAYS else None
    lo = (onset.first - injection.first).days
    hi = (onset.last - injection.first).days
    if hi < 0 or lo > ONSET_AFTER_INJECTION_DAYS:
        return None
    return max(lo, 0)


def _sides_agree(trigger: str | None, injection: str | None) -> tuple[bool, str | None]:
    if trigger is None or injection is None:
        return True, trigger or injection
    if trigger == "bilateral":
        return True, "bilateral"
    return trigger == injection, trigger


def _trigger_side(
    content: Content, r: Mapping[str, object], matches: Sequence[Match]
) -> str | None:
    """The trigger's side: from its code, else from its bodySite (left + right = bilateral)."""
    side = concept_side(matches)
    if side is not None:
        return side
    sides: set[str] = set()
    body_sites = r.get("bodySite")  # a list on Condition, one concept on Observation
    if isinstance(body_sites, Mapping):
        body_sites = [body_sites]
    for concept in body_sites if isinstance(body_sites, list) else ():
        for match in content.codes.match_concept(concept, frozenset({"body-laterality"})):
            if match.entry.laterality:
                sides.add(match.entry.laterality)
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return sides.pop() if len(sides) == 1 else None


def past_injection_neuropathies(
    resources: Iterable[object], content: Content, patient_id: str, now: datetime
) -> list[PastNeuropathy]:
    """Foot-drop triggers of any age attributed, at the time, to a gluteal IM injection (§4.6.6).

    Sorted by trigger reference; for each trigger the closest preceding injection is named.
    """
    rows = [r for r in resources if isinstance(r, Mapping)]
    sets = {"Condition": frozenset({"footdrop-trigger"}), "Observation": _FINDING}
    candidates = [
        r
        for r in rows
        if (wanted := sets.get(str(r.get("resourceType")))) is not None
        and content.codes.match_concept(r.get("code"), wanted)
    ]
    if not candidates:
        return []  # the common case: no foot drop on record, no injection to read
    injections = _injections(rows, content, patient_id)
    if not injections:
        return []
    today = now.date()
    found: list[PastNeuropathy] = []
    for r in candidates:
        try:
            event = _event(r, content, patient_id, injections, today)
        except _UNREADABLE:
            continue
        if event is not None:
            found.append(event)
    return sorted(found, key=lambda n: n.ref)


def _event(
    r: Mapping[str, object],
    content: Content,
    patient_id: str,
    injections: list[_PastInjection],
    today: date,
) -> PastNeuropathy | None:
    observation = r.get("resourceType") == "Observation"
    valueset = "footdrop-finding" if observation else "footdrop-trigger"
    matches = content.codes.match_concept(r.get("code"), frozenset({valueset}))
    if not matches or other_patient(r, "subject", patient_id):
        return None
    verification = _status(r.get("verificationStatus"))
    clinical = _status(r.get("clinicalStatus"))
    if verification in ("refuted", "entered-in-error") or clinical == "entered-in-error":
        return None
    if observation and not _finding_present(content, r):
        return None
    onset = _effective(r) if observation else _onset(r)
    if onset is None or onset.first > today:
        return None
    trigger_side = _trigger_side(content, r, matches)
    best: tuple[int, str, _PastInjection, str | None] | None = None
    for inj in injections:
        days = _days_after(onset, inj.when)
        if days is None:
            continue
        agree, side = _sides_agree(trigger_side, inj.side)
        if not agree:
            continue
        key = (days, inj.ref, inj, side)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        return None
    days, _, inj, side = best
    m = matches[0]
    abated = r.get("abatementDateTime")
    current = clinical in (None, "active", "recurrence", "relapse") and not abated
    return PastNeuropathy(
        ref=_ref(r),
        label=f"{m.display} ({m.code})",
        side=side,
        onset=onset.first if onset.first >= inj.when.first else inj.when.first,
        days=days,
        injection_ref=inj.ref,
        injection_label=inj.label,
        injection_date=inj.when.first,
        current=current,
        abated=abated[:10] if isinstance(abated, str) else None,
        clinical=clinical,
    )
