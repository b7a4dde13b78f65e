"""Prevention at the point of ordering: a safer site for a new IM injection (order-select/-sign).

For each draft order being judged — the *selected* ones on ``order-select``, *every* draft on
``order-sign`` — that gives an intramuscular injection (R2 route codes; an uncoded route whose text
says IM or whose site is gluteal), the site decides:

* dorsogluteal or unspecified gluteal (LG, RG, BU, 1236872009, 1236873004, 46862004), no site, or
  a site given only as text ⇒ an ``info`` card recommending the ventrogluteal site (or the deltoid
  or vastus lateralis where the volume allows), with an ``update`` suggestion that writes the
  same side's ventrogluteal site (LVG / RVG) into the draft; both sides, one suggestion each
  (``at-most-one``), when the side is unknown;
* a documented injection neuropathy (:func:`rules.injection_neuropathies`) ⇒ a ``warning`` for any
  gluteal site (ventrogluteal included) or no site, worded more strongly when the order is on the
  affected side or does not say which side; the suggestion is the unaffected side's ventrogluteal
  site;
* ventrogluteal (without a neuropathy), deltoid or arm, vastus lateralis or thigh, and any coded
  non-IM route (subcutaneous, oral ...) ⇒ no card.

Risk factors (child, older age, underweight, anticoagulation) are named on the card; they do not
change the indicator. Everything here is pure: the draft orders come from the request context, the
patient's record from the prefetch, ``now`` from the caller. Card text and the updated resource are
built by :mod:`prevention_card`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds_service.domain.card import age_years
from cds_service.domain.content import Content
from cds_service.domain.engine import Evaluation
from cds_service.domain.facts import (
    BmiFact,
    Facts,
    classify_route,
    concept_text,
    extract_facts,
    injection_site,
    medication_name,
    names_anticoagulant,
    other_patient,
    says_im,
)
from cds_service.domain.prefetch import flatten
from cds_service.domain.prevention_card import prevention_card
from cds_service.domain.rules import InjectionNeuropathy, injection_neuropathies

__all__ = [
    "MODES",
    "DraftInjection",
    "Judgement",
    "RiskFactors",
    "SiteFact",
    "evaluate_prevention",
    "judge",
    "judged_orders",
    "read_draft",
    "risk_factors",
]

MODES = ("order-select", "order-sign")
JUDGED_TYPES = frozenset({"MedicationRequest", "Immunization"})
#: MedicationRequest statuses that will not lead to an injection (nothing to prevent).
CLOSED_STATUSES = frozenset({"entered-in-error", "cancelled", "stopped", "completed"})
#: Immunization statuses that are not a planned vaccination. R4 has no draft status for an
#: Immunization: one in draftOrders is judged unless it records a vaccination already given
#: (``completed``: changing its site would falsify the record) or is ``entered-in-error``;
#: ``not-done`` ("not given yet") and a missing or non-R4 ``draft`` status are judged.
CLOSED_IMMUNIZATION = frozenset({"entered-in-error", "completed"})
#: What reading a malformed resource can raise (as in :mod:`facts`): skipped, never fatal.
UNREADABLE = (AttributeError, TypeError, ValueError, KeyError, IndexError)
GLUTEAL = "gluteal"
VENTROGLUTEAL = "ventrogluteal"


# --- reading the draft orders ----------------------------------------------------------------


@dataclass(frozen=True)
class SiteFact:
    """The site of one IM dosage instruction (or of an Immunization: ``index`` -1)."""

    index: int
    site_class: str | None  # injection-site class; None = no site or not coded
    side: str | None
    label: str | None  # display of the coded site, or the text of an uncoded one
    code: str | None  # the code as written in the draft
    present: bool  # a site element is there (coded or not)


@dataclass(frozen=True)
class DraftInjection:
    """A draft order that gives an IM injection, as the prevention rules read it."""

    ref: str  # "MedicationRequest/<id>"; "" when the draft has no id (no update possible)
    resource: Mapping[str, Any]
    kind: str  # MedicationRequest | Immunization
    vaccine: bool
    medication: str | None
    dose: str | None
    route: str  # how the route was read: a coded display "(code)", route text, or "site"
    route_coded: bool
    sites: tuple[SiteFact, ...]  # one per IM dosage instruction


def draft_resources(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of ``context.draftOrders`` (a Bundle, or a bare resource), never raising."""
    return flatten(context.get("draftOrders"))


def judged_orders(mode: str, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The drafts a hook judges: the selected ones (order-select) or all of them (order-sign)."""
    drafts = draft_resources(context)
    if mode != "order-select":
        return drafts
    selections = context.get("selections")
    if not isinstance(selections, list):
        return []
    wanted = {s for s in selections if isinstance(s, str)}
    return [r for r in drafts if _reference(r) in wanted]


def _reference(resource: Mapping[str, Any]) -> str:
    rid = resource.get("id")
    return f"{resource['resourceType']}/{rid}" if isinstance(rid, str) and rid else ""


def _dose_text(dosage: Mapping[str, Any]) -> str | None:
    text = dosage.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for item in dosage.get("doseAndRate") or ():
        if isinstance(item, Mapping):
            quantity = item.get("doseQuantity")
            if isinstance(quantity, Mapping):
                return _quantity(quantity)
    return None


def _quantity(quantity: Mapping[str, Any]) -> str | None:
    value = quantity.get("value")
    unit = quantity.get("unit") or quantity.get("code")
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = f"{value:g}"
        return f"{number} {unit}" if isinstance(unit, str) and unit else number
    return None


def _medication(resource: Mapping[str, Any], bundle: Sequence[Mapping[str, Any]]) -> str | None:
    """The medication's name; a medicationReference is resolved in ``contained`` or the Bundle."""
    name = medication_name(resource)
    reference = resource.get("medicationReference")
    if isinstance(reference, Mapping) and isinstance(reference.get("reference"), str):
        target = reference["reference"]
        contained = [c for c in resource.get("contained") or () if isinstance(c, Mapping)]
        candidates = [(f"#{c.get('id')}", c) for c in contained]
        candidates += [(_reference(m), m) for m in bundle if m.get("resourceType") == "Medication"]
        for key, medication in candidates:
            if key == target and medication.get("resourceType") == "Medication":
                return concept_text(medication.get("code")) or name
    return name


def _is_vaccine(content: Content, concept: object, text: str | None) -> bool:
    if isinstance(concept, Mapping):
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and content.codes.alias(coding.get("system")) == "cvx":
                return True
    return bool(text) and "vaccin" in str(text).lower()


def _site_fact(content: Content, index: int, value: object) -> SiteFact:
    site_class, side, label = injection_site(content.codes, value)
    code = None
    concept = value[0] if isinstance(value, list) and value else value
    if isinstance(concept, Mapping):
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                code = coding["code"]
                break
    present = isinstance(concept, Mapping) and bool(concept)
    return SiteFact(index, site_class, side, label, code, present)


def _route_reading(
    content: Content, route: object, site: SiteFact, *texts: object
) -> tuple[str, bool] | None:
    """How a dosage is IM: (description, coded), or None when it is not an IM injection (R2)."""
    kind = classify_route(content.codes, route)
    if kind == "im":
        matches = content.codes.match_concept(route, frozenset({"route-im"}))
        m = matches[0]
        return f"{m.display} ({m.code})", True
    if kind == "not-im":
        return None
    route_text = route.get("text") if isinstance(route, Mapping) else None
    if says_im(route_text, *texts):
        said = next((t for t in (route_text, *texts) if isinstance(t, str) and t.strip()), "IM")
        return content.phrase("prevention-route-text", text=said), False
    if site.site_class in (GLUTEAL, VENTROGLUTEAL):
        return content.phrase("prevention-route-site-only"), False
    return None


def read_draft(
    resource: Mapping[str, Any],
    content: Content,
    patient_id: str,
    bundle: Sequence[Mapping[str, Any]] = (),
) -> DraftInjection | None:
    """The IM injection a draft order gives, or None (not IM, closed, other patient, not a drug).

    A draft whose relevant fields cannot be read is treated like any other unreadable resource
    of the engine: it is skipped (no card), never an error.
    """
    try:
        return _read_draft(resource, content, patient_id, bundle)
    except UNREADABLE:
        return None


def _status(resource: Mapping[str, Any]) -> str | None:
    status = resource.get("status")
    return status if isinstance(status, str) else None


def _read_draft(
    resource: Mapping[str, Any],
    content: Content,
    patient_id: str,
    bundle: Sequence[Mapping[str, Any]],
) -> DraftInjection | None:
    rtype = resource.get("resourceType")
    closed = CLOSED_IMMUNIZATION if rtype == "Immunization" else CLOSED_STATUSES
    if rtype not in JUDGED_TYPES or _status(resource) in closed:
        return None
    ref = _reference(resource)
    if rtype == "Immunization":
        if other_patient(resource, "patient", patient_id):
            return None
        site = _site_fact(content, -1, resource.get("site"))
        reading = _route_reading(content, resource.get("route"), site)
        if reading is None:
            return None
        quantity = resource.get("doseQuantity")
        vaccine = concept_text(resource.get("vaccineCode")) or None
        return DraftInjection(
            ref=ref,
            resource=resource,
            kind=rtype,
            vaccine=True,
            medication=vaccine,
            dose=_quantity(quantity) if isinstance(quantity, Mapping) else None,
            route=reading[0],
            route_coded=reading[1],
            sites=(site,),
        )
    if other_patient(resource, "subject", patient_id):
        return None
    medication = _medication(resource, bundle)
    sites: list[SiteFact] = []
    readings: list[tuple[str, bool]] = []
    dose = None
    dosages = resource.get("dosageInstruction")
    for index, dosage in enumerate(dosages if isinstance(dosages, list) else ()):
        if not isinstance(dosage, Mapping):
            continue
        site = _site_fact(content, index, dosage.get("site"))
        reading = _route_reading(content, dosage.get("route"), site, dosage.get("text"))
        if reading is None:
            continue
        sites.append(site)
        readings.append(reading)
        dose = dose or _dose_text(dosage)
    if not sites:
        return None
    return DraftInjection(
        ref=ref,
        resource=resource,
        kind=rtype,
        vaccine=_is_vaccine(content, resource.get("medicationCodeableConcept"), medication),
        medication=medication,
        dose=dose,
        route=readings[0][0],
        route_coded=readings[0][1],
        sites=tuple(sites),
    )


# --- risk factors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskFactors:
    """What makes a sciatic injection injury more likely (E5), and what could not be checked."""

    age: int | None
    child: bool
    older: bool
    bmi: BmiFact | None  # the latest BMI measured within ``bmi_recent`` (None: none)
    bmi_applies: bool  # the adult cut-off applies (adult, or age unknown)
    underweight: bool
    anticoagulation: tuple[str, ...]

    @property
    def named(self) -> tuple[str, ...]:
        """The risk factors present, as keys: child, older, underweight, anticoagulated."""
        flags = (
            ("child", self.child),
            ("older", self.older),
            ("underweight", self.underweight),
            ("anticoagulated", bool(self.anticoagulation)),
        )
        return tuple(key for key, present in flags if present)


def risk_factors(
    facts: Facts, content: Content, now: datetime, drafts: Sequence[Mapping[str, Any]] = ()
) -> RiskFactors:
    """Child, age ≥ 65, BMI < 18.5 (adults) and anticoagulation, from the record and the drafts.

    Anticoagulation: a current Condition of the ``anticoagulation`` value set (Z79.01, D68.32,
    T45.515-), an active MedicationRequest or a MedicationAdministration in the last
    ``anticoagulant_before_injection`` naming a configured anticoagulant, or an anticoagulant
    among the draft orders of this session.
    """
    t = content.thresholds
    age = age_years(facts.birth_date, now)
    recent = [b for b in facts.bmi if b.time >= now - t.bmi_recent]
    bmi = max(recent, key=lambda b: (b.time, b.ref)) if recent else None
    bmi_applies = age is None or age >= t.bmi_adult_age
    anticoagulation: list[str] = sorted(
        c.label for c in facts.conditions if "anticoagulation" in c.valuesets and c.current
    )
    anticoagulation += sorted(f"{drug} (active order)" for _, drug in facts.anticoagulant_orders)
    anticoagulation += [
        f"{drug} given {when:%Y-%m-%d}"
        for when, drug in sorted(facts.anticoagulant_times)
        if now - t.anticoagulant_before_injection <= when <= now
    ]
    for draft in drafts:
        if draft.get("resourceType") != "MedicationRequest" or _status(draft) in CLOSED_STATUSES:
            continue
        try:
            drug = medication_name(draft)
        except UNREADABLE:
            continue
        if names_anticoagulant(content, drug):
            anticoagulation.append(f"{drug} (ordered now)")
    return RiskFactors(
        age=age,
        child=age is not None and age < t.child_age,
        older=age is not None and age >= t.older_adult_age,
        bmi=bmi,
        bmi_applies=bmi_applies,
        underweight=bmi is not None and bmi_applies and bmi.value < t.underweight_bmi,
        anticoagulation=tuple(dict.fromkeys(anticoagulation)),
    )


# --- the judgement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What one card says about one draft order."""

    draft: DraftInjection
    site: SiteFact  # the site the card is about (the first risky IM dosage's)
    positions: tuple[int, ...]  # dosage indexes whose site the update replaces (-1: Immunization)
    indicator: str  # info | warning
    case: str  # info | affected | other | order-side-unknown | both
    targets: tuple[str, ...]  # sides of the ventrogluteal sites suggested ("left", "right")
    neuropathies: tuple[InjectionNeuropathy, ...] = ()
    affected: str | None = None  # the neuropathy's side when it is one side


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def judge(draft: DraftInjection, neuropathies: Sequence[InjectionNeuropathy]) -> Judgement | None:
    """The card for one IM draft, or None when its site is safe (R3 classes, see the module)."""
    risky = (GLUTEAL, VENTROGLUTEAL, None) if neuropathies else (GLUTEAL, None)
    sites = [s for s in draft.sites if s.site_class in risky]
    if not sites:
        return None
    site = sites[0]
    positions = tuple(s.index for s in sites)
    targets: tuple[str, ...]
    if not neuropathies:
        targets = (site.side,) if site.side in ("left", "right") else ("left", "right")
        return Judgement(draft, site, positions, "info", "info", targets)
    sides = {n.side for n in neuropathies}
    one_side = sides <= {"left"} or sides <= {"right"}
    if not one_side:  # bilateral, both sides, or a side not documented
        return Judgement(draft, site, positions, "warning", "both", (), tuple(neuropathies))
    affected = "left" if sides == {"left"} else "right"
    unaffected = _other(affected)
    if site.side == affected:
        case, targets = "affected", (unaffected,)
    elif site.side == unaffected:
        case = "other"
        targets = () if site.site_class == VENTROGLUTEAL else (unaffected,)
    else:
        case, targets = "order-side-unknown", (unaffected,)
    return Judgement(
        draft, site, positions, "warning", case, targets, tuple(neuropathies), affected
    )


# --- the entry point --------------------------------------------------------------------------


def evaluate_prevention(
    mode: str,
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
) -> Evaluation:
    """One card per judged IM draft with a risky site; ``mode`` is the hook (order-select/-sign)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    patient_id = context.get("patientId")
    patient_id = patient_id if isinstance(patient_id, str) else ""
    all_drafts = draft_resources(context)
    injections = [
        draft
        for resource in judged_orders(mode, context)
        if (draft := read_draft(resource, content, patient_id, all_drafts)) is not None
    ]
    facts = extract_facts(resources if resources is not None else (), content, patient_id, now)
    cards: list[dict[str, Any]] = []
    if injections:
        neuropathies = injection_neuropathies(facts, now, content.thresholds)
        risks = risk_factors(facts, content, now, all_drafts)
        for number, draft in enumerate(injections):
            judgement = judge(draft, neuropathies)
            if judgement is not None:
                cards.append(
                    prevention_card(
                        content,
                        judgement,
                        risks,
                        hook_instance=hook_instance,
                        key=draft.ref or f"draft-{number}",
                    )
                )
    return Evaluation(cards=cards, resources_read=facts.read, resources_skipped=facts.skipped)
