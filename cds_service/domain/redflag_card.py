"""The critical card of the red-flag pathways R7a-R7f (clinical.md §4.1, §4.6.3).

One card for every red flag found: the detail starts with each flag's action sentence in §4.6.3
order (AFP, haematoma / compartment, bilateral, cauda equina, progression), then the R7c sentence
of an anticoagulated patient; the suggestions are the union of the flags' URGENT_EVAL orders (one
per code); every routine suggestion is held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cds_service.domain.card import (
    _already_ordered,
    _date,
    _is_child,
    _leg,
    _onset_text,
    _side_word,
    _suggestion,
    action_text,
    build_resource,
    existing_notes,
    frame_card,
    make_uuid,
)
from cds_service.domain.card_short import BuiltCard
from cds_service.domain.content import Content, Thresholds
from cds_service.domain.facts import Facts, InjectionFact
from cds_service.domain.fhirtime import fhir_date
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.plan import Plan
from cds_service.domain.rules import Trigger

_AFP = frozenset({"afp", "afp-any-age"})
_REASON_TYPES = ("Condition/", "Observation/")


def _why(kind: str) -> str:
    return "why-afp" if kind in _AFP else f"why-{kind}"


def card_trigger(triggers: Sequence[Trigger]) -> Trigger | None:
    """The trigger a red-flag card names: Conditions first, then the earliest, by reference."""
    if not triggers:
        return None
    return min(triggers, key=lambda tr: (tr.kind != "condition", tr.hi, tr.ref))


def card_injections(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> list[InjectionFact]:
    """The (at most three, latest first) injections a red-flag card names as evidence."""
    latest = max((tr.hi for tr in triggers), default=now)
    near = [
        i for i in facts.injections if i.time <= latest and latest - i.time <= t.attribution_limit
    ]
    return sorted(near, key=lambda i: (-i.time.timestamp(), i.ref))[:3]


def red_flag_refs(
    facts: Facts, triggers: Sequence[Trigger], now: datetime, t: Thresholds
) -> tuple[str | None, list[str]]:
    """The trigger and injections a red-flag card is about (its SMART link's appContext)."""
    trig = card_trigger(triggers)
    return (trig.ref if trig else None), [i.ref for i in card_injections(facts, triggers, now, t)]


def red_flag_card(
    content: Content,
    facts: Facts,
    flags: Sequence[RedFlag],
    plan: Plan,
    *,
    triggers: Sequence[Trigger],
    floor: RedFlag | None,
    context: Mapping[str, Any],
    now: datetime,
    hook_instance: str,
    intent: str,
    links: Sequence[Mapping[str, str]] | None = None,
) -> BuiltCard:
    """One ``critical`` card for the red flags ``flags`` (already in §4.6.3 order).

    R9a: the card keeps the action sentences, the flags with one line of why and the held /
    already-ordered notes; the evidence, the orders' notes and every other sentence go to the
    app page (returned as ``page_notes``).
    """
    child = _is_child(facts, now, content)
    trig = card_trigger(triggers)
    side = trig.side if trig is not None else None
    names = list(dict.fromkeys(content.phrase(f"flag-{f.kind}") for f in flags))
    flags_text = " and ".join(names)
    actions = [action_text(content, f) for f in flags]
    if floor is not None:
        actions.append(action_text(content, floor))
    evidence = [
        content.text(
            "evidence-red-flag",
            flag=content.phrase(f"flag-{f.kind}"),
            condition="; ".join(f.labels),
            onset=_date(f.onset),
        )
        for f in flags
    ]
    if trig is not None:
        evidence.append(
            content.text(
                "evidence-trigger",
                condition=trig.label,
                side=side or "not documented",
                onset=_onset_text(trig),
            )
        )
    for i in card_injections(facts, triggers, now, content.thresholds):
        evidence.append(
            content.text(
                "evidence-injection",
                injection=i.label,
                date=f"{i.time:%Y-%m-%d}" if i.day_only else f"{i.time:%Y-%m-%d %H:%M} UTC",
                drug=f" ({i.drug})" if i.drug and i.drug != i.label else "",
                site=i.site_label or "not documented",
                side=i.site_side or "not documented",
                im_evidence=content.phrase(f"im-{i.evidence}"),
            )
        )
    if floor is not None:
        evidence += [content.text("evidence-anticoagulation", what=w) for w in floor.labels[:3]]
    whys = list(dict.fromkeys(content.text(_why(f.kind)) for f in flags))
    values = {"side": _side_word(side), "leg": _leg(side), "not_before": "", "from": "", "to": ""}
    plan_lines = []
    suggestions = []
    for order_id in plan.suggest:
        spec = content.orders[order_id]
        reasons = [trig.ref] if trig is not None else []
        for f in flags:
            if order_id in f.orders:  # ServiceRequest.reasonReference: Condition / Observation
                reasons += [r for r in f.evidence if r.startswith(_REASON_TYPES)]
        text_name = "text_child" if child and "text_child" in spec.texts else "text"
        plan_lines.append(
            content.text(
                "plan-urgent",
                label=spec.render("label", **values),
                text=spec.render(text_name, **values),
                note=spec.render("note", **values) or "",
            )
        )
        resource = build_resource(
            content,
            spec,
            context=context,
            now=now,
            intent=intent,
            reasons=reasons,
            values=values,
            child=child,
            occurrence={"occurrenceDateTime": fhir_date(now)},
        )
        suggestions.append(
            _suggestion(
                content, order_id, hook_instance=hook_instance, resource=resource, values=values
            )
        )
    notes = [
        content.text(template, **dict(note_values))
        for f in flags
        for template, note_values in f.notes
    ]
    if child and not any(f.kind in _AFP for f in flags):
        notes.append(content.text("note-child"))
    notes.append(content.text("note-every-card"))
    detail = content.text(
        "detail-critical",
        actions="\n\n".join(a for a in actions if a),
        flags=flags_text,
        why=whys[0] if whys else "",
        already_ordered=_already_ordered(content, plan),
    )
    page_notes = [
        *(
            f"- **{content.phrase(f'flag-{f.kind}')}**: {w}"
            for f, w in zip(flags, whys, strict=False)
        ),
        *evidence,
        *plan_lines,
        *existing_notes(plan),
        *dict.fromkeys(notes),
    ]
    afp = next((f for f in flags if f.kind in _AFP), None)
    if afp is not None:
        summary = content.text("summary-afp" if afp.kind == "afp" else "summary-afp-any-age")
    else:
        summary = content.text("summary-critical", flags=flags_text)
    card = frame_card(
        content.footdrop,
        uuid_key=make_uuid(hook_instance, "card", "card:red-flag"),
        summary=summary,
        detail=detail,
        indicator="critical",
        suggestions=suggestions,
        links=links,
    )
    return BuiltCard(card, tuple(page_notes))
