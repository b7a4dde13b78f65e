"""Prevention at the point of ordering: a safer site for a new IM injection (order-select/-sign).

For each draft order being judged — the *selected* ones on ``order-select``, *every* draft on
``order-sign`` — that gives an intramuscular injection (R2 route codes; an uncoded route whose text
says IM or whose site is gluteal), the site decides. A site written only as text ("R buttock",
"LUOQ", "left VG") is read by :func:`prevention_sites.text_site` and keeps its side (R8c).

* A drug (immune globulins included) into a dorsogluteal or unspecified gluteal site (LG, RG, BU,
  1236872009, 1236873004, 46862004, a buttock text), no site, or an unrecognised site ⇒ ``info``
  recommending the ventrogluteal site, with an ``update`` writing the same side's LVG / RVG; both
  sides, one suggestion each (``at-most-one``), when the side is not stated.
* A **vaccine** (R8c) is never moved to the buttock: into any gluteal site (ventrogluteal
  included) ⇒ ``warning``, update to the age-appropriate site on the same side (thigh LVL / RVL
  under 3 years, deltoid LD / RD from 3 years; both when the age is unknown); no site ⇒ ``info``
  with the age-appropriate site. Hepatitis B and rabies vaccines add the immunogenicity sentence.
* A documented injection neuropathy — the engine's current finding
  (:func:`rules.injection_neuropathies`) or a past event of any age
  (:func:`prevention_history.past_injection_neuropathies`, §4.6.6) ⇒ ``warning`` for any gluteal
  site (ventrogluteal included) or no site, worded more strongly when the order is on the
  affected side or does not say which side; a drug's suggestion is the unaffected side's
  ventrogluteal site, a vaccine's the age-appropriate deltoid / thigh.
* Ventrogluteal (a drug without a neuropathy), deltoid or arm, vastus lateralis or thigh, and any
  coded non-IM route (subcutaneous, oral ...) ⇒ no card.

Risk factors (child, older age, underweight, anticoagulation) are named on the card; they do not
change the indicator. Everything here is pure: the draft orders come from the request context, the
patient's record from the prefetch, ``now`` from the caller. Card text and the updated resource are
built by :mod:`prevention_card`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.engine import Evaluation
from cds_service.domain.facts import (
    Facts,
    classify_route,
    concept_text,
    extract_facts,
    injection_site,
    medication_name,
    other_patient,
    says_im,
)
from cds_service.domain.pairs import TooManyRecordsError
from cds_service.domain.prefetch import flatten
from cds_service.domain.prevention_card import prevention_card
from cds_service.domain.prevention_history import PastNeuropathy, past_injection_neuropathies
from cds_service.domain.prevention_risks import CLOSED_STATUSES, RiskFactors, risk_factors
from cds_service.domain.prevention_sites import (
    BAND_KINDS,
    TargetSite,
    VaccineKind,
    age_months,
    target_site,
    text_site,
    vaccine_band,
    vaccine_kind,
)
from cds_service.domain.rules import InjectionNeuropathy, injection_neuropathies

#: A documented injection neuropathy: the engine's current finding or a past event (§4.6.6).
Neuropathy = InjectionNeuropathy | PastNeuropathy

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
    from_text: bool = False  # class and side read from free text (R8c), not from a code


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
    product: VaccineKind = field(default_factory=lambda: VaccineKind(vaccine=False))  # R8c


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


def _medication_concepts(
    resource: Mapping[str, Any], bundle: Sequence[Mapping[str, Any]]
) -> tuple[str | None, list[object]]:
    """The medication's name and concepts; a medicationReference is resolved in ``contained``
    or the Bundle (its Medication.code and ingredient concepts)."""
    name = medication_name(resource)
    concepts: list[object] = [resource.get("medicationCodeableConcept")]
    reference = resource.get("medicationReference")
    if isinstance(reference, Mapping) and isinstance(reference.get("reference"), str):
        target = reference["reference"]
        contained = [c for c in resource.get("contained") or () if isinstance(c, Mapping)]
        candidates = [(f"#{c.get('id')}", c) for c in contained]
        candidates += [(_reference(m), m) for m in bundle if m.get("resourceType") == "Medication"]
        for key, medication in candidates:
            if key == target and medication.get("resourceType") == "Medication":
                concepts.append(medication.get("code"))
                return concept_text(medication.get("code")) or name, concepts
    return name, concepts


def _medication(resource: Mapping[str, Any], bundle: Sequence[Mapping[str, Any]]) -> str | None:
    """The medication's name; a medicationReference is resolved in ``contained`` or the Bundle."""
    return _medication_concepts(resource, bundle)[0]


def _site_fact(content: Content, index: int, value: object, *texts: object) -> SiteFact:
    """The site of one dosage: a recognised code, else its text, else the other texts (R8c)."""
    site_class, side, label = injection_site(content.codes, value)
    code = None
    concept = value[0] if isinstance(value, list) and value else value
    coded = site_class is not None
    site_texts: list[object] = []
    if isinstance(concept, Mapping):
        site_texts.append(concept.get("text"))
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                code = code or coding["code"]
            if isinstance(coding, Mapping):
                site_texts.append(coding.get("display"))
    present = isinstance(concept, Mapping) and bool(concept)
    if not coded:
        parsed, parsed_side, read = text_site([*site_texts, *texts])
        if parsed is not None:
            return SiteFact(index, parsed, parsed_side, read, None, present, from_text=True)
    return SiteFact(index, site_class, side, label, code, present)


def _notes(resource: Mapping[str, Any]) -> list[object]:
    notes = resource.get("note")
    if not isinstance(notes, list):
        return []
    return [n.get("text") for n in notes if isinstance(n, Mapping)]


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
    notes = _notes(resource)
    if rtype == "Immunization":
        if other_patient(resource, "patient", patient_id):
            return None
        site = _site_fact(content, -1, resource.get("site"), *notes)
        reading = _route_reading(content, resource.get("route"), site)
        if reading is None:
            return None
        quantity = resource.get("doseQuantity")
        vaccine = concept_text(resource.get("vaccineCode")) or None
        product = vaccine_kind(content, [resource.get("vaccineCode")], (), immunization=True)
        return DraftInjection(
            ref=ref,
            resource=resource,
            kind=rtype,
            vaccine=product.vaccine,
            medication=vaccine,
            dose=_quantity(quantity) if isinstance(quantity, Mapping) else None,
            route=reading[0],
            route_coded=reading[1],
            sites=(site,),
            product=product,
        )
    if other_patient(resource, "subject", patient_id):
        return None
    medication, concepts = _medication_concepts(resource, bundle)
    sites: list[SiteFact] = []
    readings: list[tuple[str, bool]] = []
    dose = None
    dosages = resource.get("dosageInstruction")
    for index, dosage in enumerate(dosages if isinstance(dosages, list) else ()):
        if not isinstance(dosage, Mapping):
            continue
        site = _site_fact(
            content,
            index,
            dosage.get("site"),
            dosage.get("text"),
            dosage.get("patientInstruction"),
            *notes,
        )
        reading = _route_reading(content, dosage.get("route"), site, dosage.get("text"))
        if reading is None:
            continue
        sites.append(site)
        readings.append(reading)
        dose = dose or _dose_text(dosage)
    if not sites:
        return None
    product = vaccine_kind(content, concepts, (medication,), immunization=False)
    return DraftInjection(
        ref=ref,
        resource=resource,
        kind=rtype,
        vaccine=product.vaccine,
        medication=medication,
        dose=dose,
        route=readings[0][0],
        route_coded=readings[0][1],
        sites=tuple(sites),
        product=product,
    )


# --- the judgement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """What one card says about one draft order."""

    draft: DraftInjection
    site: SiteFact  # the site the card is about (the first risky IM dosage's)
    positions: tuple[int, ...]  # dosage indexes whose site the update replaces (-1: Immunization)
    indicator: str  # info | warning
    case: str  # info | vaccine | affected | other | order-side-unknown | both
    targets: tuple[TargetSite, ...]  # the update suggestions (one each, at-most-one)
    neuropathies: tuple[Neuropathy, ...] = ()
    affected: str | None = None  # the neuropathy's side when it is one side
    band: str | None = None  # a vaccine's age band: infant | toddler | older | unknown
    named: tuple[TargetSite, ...] = ()  # sites the text recommends (targets, or the order's own)


def _other(side: str) -> str:
    return "right" if side == "left" else "left"


def _sides(side: str | None) -> tuple[str, ...]:
    return (side,) if side in ("left", "right") else ("left", "right")


def _vaccine_targets(
    content: Content, band: str, side: str | None, affected: str | None
) -> tuple[TargetSite, ...]:
    """The age-appropriate site(s) of a vaccine (R8c), never gluteal.

    Same side as ordered; both sides (at-most-one) when the order has no side. Age unknown: the
    deltoid and the thigh of the ordered side, none when the side is not stated either. A thigh
    on the leg with a documented neuropathy moves to the other leg.
    """
    kinds = BAND_KINDS[band]
    if len(kinds) > 1 and side not in ("left", "right"):
        return ()
    out = []
    for kind in kinds:
        for s in _sides(side):
            if kind == "thigh" and affected is not None and s == affected:
                s = _other(s)
            out.append(target_site(content, kind, s))
    return tuple(dict.fromkeys(out))


def judge(
    draft: DraftInjection,
    neuropathies: Sequence[Neuropathy],
    content: Content | None = None,
    months: int | None = None,
) -> Judgement | None:
    """The card for one IM draft, or None when its site is safe (see the module).

    ``months``: the patient's age in months (vaccines: site by age); ``content`` gives the target
    sites (required to judge a vaccine).
    """
    vaccine = draft.vaccine
    risky = (GLUTEAL, VENTROGLUTEAL, None) if neuropathies or vaccine else (GLUTEAL, None)
    sites = [s for s in draft.sites if s.site_class in risky]
    if not sites:
        return None
    site = sites[0]
    positions = tuple(s.index for s in sites)
    gluteal = site.site_class in (GLUTEAL, VENTROGLUTEAL)
    band = vaccine_band(content, months) if vaccine and content is not None else None
    if not neuropathies:
        if vaccine:
            targets = _vaccine_targets(_content(content), band or "unknown", site.side, None)
            indicator = "warning" if gluteal else "info"
            return Judgement(
                draft, site, positions, indicator, "vaccine", targets, band=band, named=targets
            )
        vg = tuple(_vg(content, s) for s in _sides(site.side))
        return Judgement(draft, site, positions, "info", "info", vg, named=vg)
    sides = {n.side for n in neuropathies}
    one_side = sides <= {"left"} or sides <= {"right"}
    if not one_side:  # bilateral, both sides, or a side not documented
        targets = (
            _vaccine_targets(_content(content), band or "unknown", site.side, None)
            if vaccine
            else ()
        )
        return Judgement(
            draft, site, positions, "warning", "both", targets, tuple(neuropathies),
            band=band, named=targets,
        )  # fmt: skip
    affected = "left" if sides == {"left"} else "right"
    unaffected = _other(affected)
    if site.side == affected:
        case = "affected"
    elif site.side == unaffected:
        case = "other"
    else:
        case = "order-side-unknown"
    if vaccine:
        targets = _vaccine_targets(_content(content), band or "unknown", site.side, affected)
        named = targets
    elif case == "other" and site.site_class == VENTROGLUTEAL:
        targets, named = (), (_vg(content, unaffected),)
    else:
        targets = named = (_vg(content, unaffected),)
    return Judgement(
        draft, site, positions, "warning", case, targets, tuple(neuropathies), affected,
        band=band, named=named,
    )  # fmt: skip


def _content(content: Content | None) -> Content:
    if content is None:
        raise ValueError("judging a vaccine needs the content (its target sites)")
    return content


def _vg(content: Content | None, side: str) -> TargetSite:
    """The ventrogluteal target on ``side`` (fixed LVG / RVG when no content is given)."""
    if content is not None:
        return target_site(content, "ventrogluteal", side)
    code = "LVG" if side == "left" else "RVG"
    return TargetSite("ventrogluteal", side, code, f"{side} ventragluteal")


# --- the entry point --------------------------------------------------------------------------


def documented_neuropathies(
    facts: Facts,
    record: Sequence[Mapping[str, Any]],
    content: Content,
    patient_id: str,
    now: datetime,
) -> list[Neuropathy]:
    """The engine's current findings plus past events of any age (§4.6.6), one per trigger."""
    try:
        found: list[Neuropathy] = list(injection_neuropathies(facts, now, content.thresholds))
    except TooManyRecordsError:  # too large to attribute: only past, dated events below count
        found = []
    known = {n.trigger.ref for n in found if isinstance(n, InjectionNeuropathy)}
    found += [
        p
        for p in past_injection_neuropathies(record, content, patient_id, now)
        if p.ref not in known
    ]
    return found


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
    record = resources if resources is not None else ()
    facts = extract_facts(record, content, patient_id, now)
    cards: list[dict[str, Any]] = []
    if injections:
        neuropathies = documented_neuropathies(facts, record, content, patient_id, now)
        risks = risk_factors(facts, content, now, all_drafts)
        months = age_months(facts.birth_date, now)
        for number, draft in enumerate(injections):
            judgement = judge(draft, neuropathies, content, months)
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
