"""R9: card text from the Markdown templates, and the draft FHIR resources of the suggestions.

Every optional field is omitted rather than emitted empty (CDS Hooks §6); uuids are uuid5 of the
hook instance and a stable key, so the same request always gives the same card.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from cds_service.domain.card_short import (
    SUMMARY_MAX,
    BuiltCard,
    _without,
    fit_summary,
    short_actions,
    summary_actions,
)
from cds_service.domain.content import Content, Framing, OrderSpec
from cds_service.domain.facts import Facts
from cds_service.domain.fhirtime import fhir_date, fhir_datetime, local_text
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.plan import Plan
from cds_service.domain.rules import Assessment, Trigger

NAMESPACE = uuid.UUID("6f1c2a8e-3d4b-5e6f-8a9b-0c1d2e3f4a5b")
UCUM = "http://unitsofmeasure.org"
_REQUESTER_TYPES = ("Practitioner/", "PractitionerRole/")
_BLANKS = re.compile(r"\n{3,}")
_DAY = timedelta(days=1)
_ORDER_NAMES = {
    "AFO": "Ankle-foot orthosis",
    "PT_REFERRAL": "Physiotherapy",
    "EMG_NCS": "EMG/NCS",
    "FOLLOW_UP": "Follow-up",
    "SURGICAL_EARLY": "Peripheral-nerve clinic referral",
    "SURGICAL_DECISION": "Peripheral-nerve surgeon referral",
    "TENDON_TRANSFER": "Orthopaedic (tendon transfer) referral",
    "URGENT_NEUROSURGERY": "Same-day neurosurgical evaluation",
    "URGENT_ORTHOPAEDIC": "Same-day surgical review",
    "URGENT_NEUROLOGY": "Same-day neurology evaluation",
    "URGENT_PAEDIATRIC_NEUROLOGY": "Same-day paediatric neurology",
    "URGENT_PUBLIC_HEALTH": "AFP notification",
}
_SITE_WORDS = {
    "gluteal": "gluteal",
    "ventrogluteal": "ventrogluteal",
    "vastus_lateralis": "thigh",
    "thigh": "thigh",
    "upper_limb": "arm",
}


def make_uuid(hook_instance: str, key: str, tag: str | None = None) -> str:
    """uuid5 of the hook instance and ``key``; with ``tag``, its first 4 bytes name the tag.

    The tag is what the card or suggestion is (``card:foot-drop``, ``suggestion:AFO``): content,
    never patient data. Feedback carries only uuids; the feedback report reads the tag back from
    them (see :func:`tag_prefix`), so nothing has to be stored per hook call.
    """
    value = uuid.uuid5(NAMESPACE, f"{hook_instance}|{key}")
    if tag is None:
        return str(value)
    return str(uuid.UUID(bytes=tag_prefix(tag) + value.bytes[4:]))


def tag_prefix(tag: str) -> bytes:
    """The 4 bytes that open every uuid made with ``tag`` (SHA-256 of the tag)."""
    return hashlib.sha256(tag.encode("utf-8")).digest()[:4]


def _side_word(side: str | None) -> str:
    return side if side in ("left", "right", "bilateral") else "affected"


def _leg(side: str | None) -> str:
    if side in ("left", "right"):
        return f"{side} leg"
    return "both legs" if side == "bilateral" else "affected leg"


def age_years(birth: datetime | None, now: datetime) -> int | None:
    if birth is None:
        return None
    return now.year - birth.year - ((now.month, now.day) < (birth.month, birth.day))


def _is_child(facts: Facts, now: datetime, content: Content) -> bool:
    age = age_years(facts.birth_date, now)
    return age is not None and age < content.thresholds.child_age


def tidy(markdown: str) -> str:
    """Markdown without trailing spaces and with at most one blank line in a row."""
    lines = [line.rstrip() for line in markdown.strip().splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def clip_summary(text: str) -> str:
    """One line, cut at a word boundary with "…" to fit the CDS Hooks limit (< 140 characters)."""
    text = " ".join(text.split())
    if len(text) <= SUMMARY_MAX:
        return text
    head = text[: SUMMARY_MAX - 1]
    if " " in head and text[SUMMARY_MAX - 1] != " ":
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:(") + "…"


def due_text(day: date | None, now: datetime) -> str:
    """R8b: a computed date already past reads "now (due since <date>)", never a future action."""
    if day is None:
        return "now"
    return f"now (due since {day})" if day < now.date() else f"on or after {day}"


def _date(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d}" if moment else "date not recorded"


def _onset_text(trig: Trigger) -> str:
    if trig.lo is None:
        return f"not recorded (first recorded by {local_text(trig.hi)})"
    if trig.lo == trig.hi:
        return local_text(trig.hi)
    if trig.hi - trig.lo <= _DAY:
        return f"{trig.lo:%Y-%m-%d}"
    return f"between {trig.lo:%Y-%m-%d} and {trig.hi:%Y-%m-%d}"


# --- FHIR resources ---------------------------------------------------------------------------


def _coding(content: Content, spec: OrderSpec) -> dict[str, str]:
    return {"system": content.codes.uri(spec.system), "code": spec.code, "display": spec.display}


def build_resource(
    content: Content,
    spec: OrderSpec,
    *,
    context: Mapping[str, Any],
    now: datetime,
    intent: str,
    reasons: Sequence[str],
    values: Mapping[str, str],
    child: bool,
    occurrence: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A draft DeviceRequest / ServiceRequest for one suggestion."""
    text_name = "text_child" if child and "text_child" in spec.texts else "text"
    concept = {"coding": [_coding(content, spec)], "text": spec.render(text_name, **values)}
    resource: dict[str, Any] = {"resourceType": spec.resource, "status": "draft", "intent": intent}
    resource["priority"] = "stat" if spec.key == "URGENT_EVAL" else "routine"
    if spec.resource == "DeviceRequest":
        resource["codeCodeableConcept"] = concept
    else:
        resource["code"] = concept
    patient_id = context.get("patientId")
    resource["subject"] = {"reference": f"Patient/{patient_id}"}
    encounter = context.get("encounterId")
    if isinstance(encounter, str) and encounter:
        resource["encounter"] = {"reference": f"Encounter/{encounter}"}
    if occurrence:
        resource.update(occurrence)
    resource["authoredOn"] = fhir_datetime(now)
    user = context.get("userId")
    if isinstance(user, str) and user.startswith(_REQUESTER_TYPES) and "/" in user:
        resource["requester"] = {"reference": user}
    refs = [r for r in dict.fromkeys(reasons) if r]
    if refs:
        resource["reasonReference"] = [{"reference": r} for r in refs]
    note = spec.render("note", **values)
    if note:
        resource["note"] = [{"text": note}]
    instruction = spec.render("patient_instruction", **values)
    if instruction and spec.resource == "ServiceRequest":
        resource["patientInstruction"] = instruction
    return resource


def _pt_timing(spec: OrderSpec) -> dict[str, Any]:
    t = spec.timing

    def weeks(n: int) -> dict[str, Any]:
        return {"value": n, "unit": "wk", "system": UCUM, "code": "wk"}

    return {
        "occurrenceTiming": {
            "repeat": {
                "boundsRange": {"low": weeks(t["weeks_min"]), "high": weeks(t["weeks_max"])},
                "frequency": t["frequency"],
                "frequencyMax": t["frequency_max"],
                "period": t["period_weeks"],
                "periodUnit": "wk",
            }
        }
    }


def _suggestion(
    content: Content,
    order_id: str,
    *,
    hook_instance: str,
    resource: dict[str, Any],
    values: Mapping[str, str],
    central: bool = False,
) -> dict[str, Any]:
    spec = content.orders[order_id]
    label_name = "label_central" if central and "label_central" in spec.texts else "label"
    return {
        "label": spec.render(label_name, **values),
        "uuid": make_uuid(hook_instance, f"suggestion|{order_id}", f"suggestion:{order_id}"),
        "isRecommended": True,
        "actions": [
            {
                "type": "create",
                "description": spec.render("description", **values),
                "resource": resource,
            }
        ],
    }


def _already_ordered(content: Content, plan: Plan) -> str:
    lines = []
    for item in plan.existing:
        when = f" {item.when:%Y-%m-%d}" if item.when else ""
        extra = [x for x in (item.side, item.status) if x]
        status = f" ({', '.join(extra)})" if extra else ""
        verb = "done" if item.status == "completed" else "ordered"
        if item.what == "FOLLOW_UP" and item.ref.startswith("Appointment/"):
            verb = "booked"
        lines.append(
            content.text(
                "already-ordered",
                order=_ORDER_NAMES.get(item.what, item.what),
                verb=verb,
                when=f"{when}{status}",
            )
        )
    return "\n".join(lines)


def existing_notes(plan: Plan) -> list[str]:
    """The orders on file with their full labels and references (app page, R9a)."""
    return [
        f"- {_ORDER_NAMES.get(e.what, e.what)} on file: {e.label} ({e.ref})" for e in plan.existing
    ]


def frame_card(
    framing: Framing,
    *,
    uuid_key: str,
    summary: str,
    detail: str,
    indicator: str,
    suggestions: list[dict[str, Any]],
    selection_behavior: str = "any",
    links: Sequence[Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """A CDS Hooks card: text plus a card family's source, links and override reasons.

    ``uuid_key`` is already made unique per hook call (see ``make_uuid``); optional fields are
    omitted rather than empty, as CDS Hooks 2.0 requires. ``links`` (the SMART app link of
    R9a) replaces the family's links: the card then carries that one link.
    """
    card: dict[str, Any] = {
        "uuid": uuid_key,
        "summary": clip_summary(summary),
        "detail": tidy(detail),
        "indicator": indicator,
        "source": {k: v for k, v in framing.source.items() if v},
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = selection_behavior
    if framing.override_reasons:
        card["overrideReasons"] = [dict(r) for r in framing.override_reasons]
    chosen = framing.links if links is None else links
    if chosen:
        card["links"] = [dict(link) for link in chosen]
    return card


# --- the injection and foot-drop words --------------------------------------------------------


def _injection_words(a: Assessment) -> str:
    inj = a.injection
    parts = []
    if inj.site_side in ("left", "right"):
        parts.append(inj.site_side)
    if inj.site_class in _SITE_WORDS:
        parts.append(_SITE_WORDS[inj.site_class])
    noun = "IM vaccination" if inj.kind == "Immunization" else "IM injection"
    return " ".join([*parts, noun])


def _timing_words(a: Assessment) -> str:
    trig, inj = a.trigger, a.injection
    if a.timing_class == "uncertain":
        return f"first recorded {max(a.delta.days, 0)} days after"
    if trig.lo == trig.hi and not inj.day_only:
        hours = a.delta.total_seconds() / 3600
        if hours < 1:
            return "within 1 h of"
        if hours < 48:
            return f"{round(hours)} h after"
        return f"{a.delta.days} days after"
    days = ((trig.lo or trig.hi).date() - inj.time.date()).days
    if days <= 0:
        return "on the day of"
    return "1 day after" if days == 1 else f"{days} days after"


def _foot_drop_words(side: str | None) -> str:
    if side in ("left", "right"):
        return f"{side.capitalize()} foot drop"
    if side == "bilateral":
        return "Bilateral foot drop"
    return "Foot drop (side not documented)"


def _timing_class_phrase(content: Content, a: Assessment) -> str:
    days = max(a.delta.days, 0)
    if a.timing_class == "immediate":
        return content.phrase("class-immediate", hours=round(a.delta.total_seconds() / 3600))
    return content.phrase(f"class-{a.timing_class}", days=days)


def _severity(content: Content, grade: int) -> str:
    if grade <= 1:
        return content.phrase("severity-severe")
    if grade <= 3:
        return content.phrase("severity-moderate")
    if grade == 4:
        return content.phrase("severity-mild")
    return content.phrase("severity-normal")


def _onset_short(trig: Trigger) -> str:
    """The onset in the card's one line of why: a date, or a range of dates."""
    if trig.lo is None:
        return f"not recorded (first recorded {trig.hi:%Y-%m-%d})"
    if trig.hi - trig.lo <= _DAY:
        return f"{trig.lo:%Y-%m-%d}"
    return f"{trig.lo:%Y-%m-%d} to {trig.hi:%Y-%m-%d}"


def _injection_date(a: Assessment) -> str:
    return f"{a.injection.time:%Y-%m-%d}"


def _injection_evidence(content: Content, a: Assessment) -> str:
    inj = a.injection
    return content.text(
        "evidence-injection",
        injection=inj.label,
        date=f"{inj.time:%Y-%m-%d}" if inj.day_only else local_text(inj.time),
        drug=f" ({inj.drug})" if inj.drug and inj.drug != inj.label else "",
        site=inj.site_label or "not documented",
        side=inj.site_side or "not documented",
        im_evidence=content.phrase(f"im-{inj.evidence}"),
    )


# --- attribution card -------------------------------------------------------------------------


def attribution_card(
    content: Content,
    facts: Facts,
    a: Assessment,
    plan: Plan,
    *,
    context: Mapping[str, Any],
    now: datetime,
    hook_instance: str,
    intent: str,
    floor: RedFlag | None = None,
    named: Sequence[str] = (),
    links: Sequence[Mapping[str, str]] | None = None,
) -> BuiltCard:
    """The attribution card (R9a: short) and the sentences that move to the app page."""
    child = _is_child(facts, now, content)
    side = a.trigger.side
    central = a.lead == "central"
    cause_names = [content.phrase(f"cause-{c.group}") for c in a.competing]
    cause = ", ".join(dict.fromkeys(cause_names))
    # summary: the finding and the action (R9a)
    words = {
        "foot_drop": _foot_drop_words(side),
        "timing": _timing_words(a),
        "injection": _injection_words(a),
    }
    reasons = "; ".join(
        content.phrase("cap-competing", cause=cause)
        if cap == "cap-competing"
        else content.phrase(cap)
        for cap in a.caps
        if cap != "cap-anticoagulated"
    )
    floor_only = "cap-anticoagulated" in a.caps
    actions = summary_actions(content, plan)
    if floor_only:
        summary = content.text("summary-anticoagulated", **words)
    elif a.indicator == "warning":
        summary = fit_summary(
            [content.text("summary-warning", actions=a_text, **words) for a_text in actions]
        )
    else:
        reason = (
            content.phrase("cap-competing", cause=cause)
            if "cap-competing" in a.caps
            else content.phrase(a.caps[0])
            if a.caps
            else content.phrase("cap-delayed")
        )
        summary = fit_summary(
            [
                text
                for a_text in actions
                for text in (
                    content.text("summary-info", reason=reason, actions=a_text, **words),
                    _without(
                        content.text("summary-info", reason=reason, actions=a_text, **words),
                        f" ({reason})",
                    ),
                )
            ]
        )
    # assessment (app page)
    timing_class = _timing_class_phrase(content, a)
    if floor_only:
        assessment = content.text("assessment-anticoagulated", timing_class=timing_class)
    elif a.indicator == "warning":
        assessment = content.text("assessment-warning", timing_class=timing_class)
    else:
        assessment = content.text("assessment-info", timing_class=timing_class, reasons=reasons)
    # evidence
    evidence = [
        _injection_evidence(content, a),
        content.text(
            "evidence-trigger",
            condition=a.trigger.label,
            side=side or "not documented",
            onset=_onset_text(a.trigger),
        ),
    ]
    evidence += [
        content.text("evidence-competing", condition=c.label, onset=_date(c.onset))
        for c in a.competing
    ]
    evidence += [content.text("evidence-anticoagulation", what=w) for w in a.anticoagulation]
    context_labels = [
        c.label
        for c in facts.conditions
        if not c.refuted and "context-finding" in c.valuesets and c.ref != a.trigger.ref
    ]
    evidence += [content.text("evidence-supporting", condition=label) for label in context_labels]
    grades = plan.grades
    if grades:
        latest = grades[-1]
        evidence.append(
            content.text(
                "evidence-mrc",
                grade=f"{latest.grade}{latest.sub}",
                date=f"{latest.time:%Y-%m-%d}",
                severity=_severity(content, latest.grade),
            )
        )
    # plan: the full sentences go to the app page, the card keeps one action line (R9a)
    t = content.thresholds
    follow_from = (now + t.follow_up_from).date()
    follow_to = (now + t.follow_up_to).date()
    not_before = due_text(plan.emg_not_before, now)
    plan_lines = [
        content.text("plan-afo") if "AFO" in plan.suggest else "",
        content.text("plan-pt") if "PT_REFERRAL" in plan.suggest else "",
    ]
    if "EMG_NCS" not in plan.suggest:
        plan_lines.append("")
    elif central:
        plan_lines.append(content.text("plan-emg-central", not_before=not_before))
    else:
        plan_lines.append(
            content.text(
                "plan-emg",
                not_before=not_before,
                emg_days=t.emg_not_before.days,
                anchor=f"{a.anchor:%Y-%m-%d}",
            )
        )
    plan_lines.append(
        content.text("plan-follow-up", **{"from": follow_from, "to": follow_to})
        if "FOLLOW_UP" in plan.suggest
        else ""
    )
    elapsed_days = (now - a.anchor).days
    if plan.stage == "SURGICAL_EARLY":
        plan_lines.append(content.text("plan-escalation-early"))
    elif plan.stage == "SURGICAL_DECISION":
        plan_lines.append(content.text("plan-escalation-decision", days=elapsed_days))
    elif plan.stage == "TENDON_TRANSFER":
        plan_lines.append(content.text("plan-escalation-tendon", days=elapsed_days))
    elif not plan.regrade and now - a.anchor < t.surgical_decision:
        plan_lines.append(content.text("plan-escalation-future"))  # R8b: never a past step
    if central or a.lead == "emg":
        plan_lines = [plan_lines[2], *plan_lines[:2], *plan_lines[3:]]
    plan_lines = [line for line in plan_lines if line]
    short = short_actions(
        content,
        plan.suggest,
        not_before=not_before,
        follow=(follow_from, follow_to),
        days=elapsed_days,
        central=central,
    )
    card_actions = [content.text("plan-short", actions=short)]
    # R9a: the cap sentences that stay (site, onset), and R8a's re-grade request
    if plan.regrade:
        card_actions.append(
            content.text("note-regrade", days=t.recovery_grade_max_age.days).removeprefix("- ")
        )
    card_actions += [
        content.text(name).removeprefix("- ")
        for name in ("note-site-missing", "note-onset-uncertain")
        if name in a.notes
    ]
    # notes (all on the app page, R9a / §4.6.4)
    skip = _NOTES_WITH_VALUES | ({"note-anticoagulated"} if floor is not None else set())
    notes = [content.text(name) for name in a.notes if name not in skip]
    if a.trigger.verification and "note-provisional-trigger" in a.notes:
        notes.append(content.text("note-provisional-trigger", status=a.trigger.verification))
    notes += [
        content.text("note-link", condition=label) for label in a.link if "note-link" in a.notes
    ]
    notes += [
        content.text("note-radiating-pain", condition=label)
        for label in a.radiating
        if "note-radiating-pain" in a.notes
    ]
    notes += [content.text(name, condition=label) for name, label in a.named]
    notes += list(named)  # sentences of the red-flag pathways (contralateral MRC 4, Z79.02)
    notes += [content.text("note-ankle-brace", device=o.label) for o in plan.ankle_braces]
    notes += [
        content.text(
            "note-baseline-study",
            date=_date(o.occurrence or o.authored),
            emg_days=t.emg_not_before.days,
        )
        for o in plan.baseline_studies
    ]
    if grades and grades[-1].grade <= 2:
        notes.append(content.text("note-poor-prognosis"))
    if plan.regrade:  # R8a: no grade decides an escalation
        notes.insert(0, content.text("note-regrade", days=t.recovery_grade_max_age.days))
    held: list[str] = []
    if plan.afo_side_unknown:  # R8b: stays on the card with the already-ordered notes
        held.append(content.text("note-afo-side-unknown", side=_side_word(side)))
    if plan.repeat_emg_held and grades:  # R8a
        held.append(content.text("note-repeat-emg-held", grade=grades[-1].text))
    if child:
        notes.append(content.text("note-child"))
    notes.append(content.text("note-every-card"))
    notes.append(content.text("note-not-supported"))
    lead = ""
    if central:
        lead = content.text("lead-central", cause=cause[:1].upper() + cause[1:])
    elif a.lead == "emg":
        group = next(c.group for c in a.competing if not c.central)
        lead_why = content.phrase(f"lead-why-{group}")
        lead = content.text("lead-emg", cause=cause[:1].upper() + cause[1:], why=lead_why)
        notes.insert(0, content.text("note-emg-why", why=lead_why))
    if floor is not None:  # §4.6.3: the R7c sentence before the competing-cause lead
        lead = "\n\n".join(x for x in (action_text(content, floor), lead) if x)
    if floor_only:
        finding = content.phrase("finding-anticoagulated")
    elif a.indicator == "warning":
        finding = content.phrase("finding-warning")
    else:
        finding = content.phrase("finding-info", reasons=reasons)
    why = content.text(
        "why-attribution",
        condition=a.trigger.label,
        onset=_onset_short(a.trigger),
        timing=_timing_words(a),
        injection=f"{_injection_words(a)} of {_injection_date(a)}",
        finding=finding,
    )
    detail = content.text(
        "detail",
        lead=lead,
        plan="\n\n".join(card_actions),
        why=why,
        already_ordered="\n".join(x for x in (_already_ordered(content, plan), *held) if x),
    )
    page_notes = [
        assessment,
        *evidence,
        *plan_lines,
        *existing_notes(plan),
        *dict.fromkeys(notes),
    ]
    # suggestions
    values = {
        "side": _side_word(side),
        "leg": _leg(side),
        "not_before": not_before,
        "from": f"{follow_from}",
        "to": f"{follow_to}",
    }
    suggestions = []
    for order_id in plan.suggest:
        spec = content.orders[order_id]
        occurrence: dict[str, Any] | None = None
        if order_id == "PT_REFERRAL":
            occurrence = _pt_timing(spec)
        elif order_id == "EMG_NCS":
            occurrence = {"occurrenceDateTime": fhir_date(plan.emg_date or now)}
        elif order_id == "FOLLOW_UP":
            occurrence = {
                "occurrencePeriod": {"start": fhir_date(follow_from), "end": fhir_date(follow_to)}
            }
        resource = build_resource(
            content,
            spec,
            context=context,
            now=now,
            intent=intent,
            reasons=[a.trigger.ref],
            values=values,
            child=child,
            occurrence=occurrence,
        )
        suggestions.append(
            _suggestion(
                content,
                order_id,
                hook_instance=hook_instance,
                resource=resource,
                values=values,
                central=central and order_id == "EMG_NCS",
            )
        )
    card = frame_card(
        content.footdrop,
        uuid_key=make_uuid(hook_instance, "card", "card:foot-drop"),
        summary=summary,
        detail=detail,
        indicator=a.indicator,
        suggestions=suggestions,
        links=links,
    )
    return BuiltCard(card, tuple(page_notes))


_NOTES_WITH_VALUES = frozenset({"note-provisional-trigger", "note-link", "note-radiating-pain"})


def action_text(content: Content, flag: RedFlag) -> str:
    """The action sentence a pathway starts the detail with (values ``phrase:<name>`` rendered)."""
    if not flag.action:
        return ""
    plain = {k: v for k, v in flag.values if not v.startswith("phrase:")}
    values = {
        k: (" " + content.phrase(v.removeprefix("phrase:"), **plain))
        if v.startswith("phrase:")
        else v
        for k, v in flag.values
    }
    return re.sub(r" {2,}", " ", content.text(flag.action, **values)).strip()
