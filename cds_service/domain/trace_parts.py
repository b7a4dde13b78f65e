"""The sections of the rule trace (``trace.explain_patient_view``), from the engine's own data.

The contract (keys may be added, never renamed; dates ``YYYY-MM-DD`` or ISO datetimes in the
site zone; every list may be empty)::

    service, evaluated_at, today, time_zone{zone, assumptions[]},
    outcome{card, kind, indicator, summary}, resources[{reference, type, date, role, note}],
    steps[{rule, title, result, detail}], red_flags[{pathway, title, fired, why}],
    competing_causes[{cause, reference, decisive, why}], thresholds[{name, value, rule}],
    ignored[{reference, why}], citations[{id, text}], page_notes[], plan[{order, label, status,
    due, window_end, reference}], timeline{anchor, today, injections[], onset, grades[], orders[],
    milestones[]}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cds_service.domain.card_short import BuiltCard
from cds_service.domain.content import COMPETING_VALUESETS, Content, ThresholdRow
from cds_service.domain.facts import Facts
from cds_service.domain.pairs import TooManyRecordsError
from cds_service.domain.pathways import PathwayResult
from cds_service.domain.plan import Plan
from cds_service.domain.rules import Assessment
from cds_service.domain.trace_timeline import day as _day
from cds_service.domain.trace_timeline import timeline

__all__ = ["TraceInput", "build_trace"]

SERVICE_ID = "footdrop-im-injection"
GUIDELINE = (
    "Carolus et al. The Interdisciplinary Management of Foot Drop. Dtsch Arztebl Int 2019, "
    "doi:10.3238/arztebl.2019.0347"
)
PATHWAYS = (
    ("R7a", ("afp", "afp-any-age"), "Acute flaccid paralysis in a child"),
    ("R7b", ("haematoma", "compartment"), "Compressive haematoma or compartment syndrome"),
    ("R7c", ("anticoagulation",), "Anticoagulation (warning floor)"),
    ("R7d", ("bilateral",), "Bilateral deficit"),
    ("R7e", ("cauda-equina",), "Cauda equina"),
    ("R7f", ("progression",), "Progressive weakness"),
)
_LABELS = {
    "AFO": "AFO",
    "PT_REFERRAL": "Physiotherapy",
    "EMG_NCS": "EMG/NCS",
    "FOLLOW_UP": "Follow-up",
    "SURGICAL_EARLY": "Peripheral-nerve clinic",
    "SURGICAL_DECISION": "Peripheral-nerve surgeon",
    "TENDON_TRANSFER": "Tendon-transfer referral",
    "URGENT_NEUROSURGERY": "Same-day neurosurgical evaluation",
    "URGENT_ORTHOPAEDIC": "Same-day surgical review",
    "URGENT_NEUROLOGY": "Same-day neurology evaluation",
    "URGENT_PAEDIATRIC_NEUROLOGY": "Same-day paediatric neurology",
    "URGENT_PUBLIC_HEALTH": "AFP notification",
}
_ROUTINE = ("AFO", "PT_REFERRAL", "EMG_NCS", "FOLLOW_UP")
_EVIDENCE_ID = re.compile(r"\bE\d{1,2}\b")


@dataclass(frozen=True)
class TraceInput:
    """What one evaluation found, handed from the engine to the trace builder."""

    content: Content
    facts: Facts
    now: datetime
    zone: str
    kind: str = "none"  # attribution | red_flag | recovered | too_many_records | none
    pathways: PathwayResult | None = None
    assessment: Assessment | None = None
    plan: Plan | None = None
    built: BuiltCard | None = None
    too_many: TooManyRecordsError | None = None


def _type(ref: str) -> str:
    return ref.split("/", 1)[0] if "/" in ref else ""


# --- sections ---------------------------------------------------------------------------------


def _dates(facts: Facts) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for c in facts.conditions:
        out[c.ref] = _day(c.onset_lo or c.onset_hi or c.recorded)
    for i in facts.injections:
        out[i.ref] = _day(i.time)
    for g in facts.muscle_grades:
        out[g.ref] = _day(g.time)
    for f in facts.findings:
        out[f.ref] = _day(f.time)
    for o in facts.orders:
        out[o.ref] = _day(o.occurrence_end or o.occurrence or o.authored)
    for a in facts.appointments:
        out[a.ref] = _day(a.start)
    return out


def _resources(source: TraceInput) -> list[dict[str, Any]]:
    facts, a, plan, pw = source.facts, source.assessment, source.plan, source.pathways
    dates = _dates(facts)
    rows: dict[str, dict[str, Any]] = {}

    def add(ref: str, role: str, note: str) -> None:
        if not ref or ref in rows:
            return
        rows[ref] = {
            "reference": ref,
            "type": _type(ref),
            "date": dates.get(ref),
            "role": role,
            "note": note,
        }

    if pw is not None:
        for flag in pw.flags:
            for ref in flag.evidence:
                add(ref, "red_flag", "; ".join(flag.labels[:2]) or flag.kind)
    if a is not None:
        add(a.trigger.ref, "trigger", a.trigger.label)
        add(a.injection.ref, "injection", a.injection.label)
        for c in a.competing:
            add(c.ref, "competing_cause", c.label)
    elif pw is not None:
        for trig in pw.triggers:
            add(trig.ref, "trigger", trig.label)
        for inj in facts.injections:
            add(inj.ref, "injection", inj.label)
    if pw is not None and pw.floor is not None:
        for ref in pw.floor.evidence:
            add(ref, "risk", "anticoagulation")
    for g in facts.muscle_grades:
        add(g.ref, "grade", f"MRC {g.movement} {g.text}")
    if plan is not None:
        for e in plan.existing:
            add(e.ref, "order", e.label)
    for o in facts.orders:
        add(o.ref, "order", o.label)
    for cond in facts.conditions:
        if not cond.refuted:
            add(cond.ref, "other", cond.label)
    return list(rows.values())


def _steps(source: TraceInput) -> list[dict[str, str]]:
    facts, a, plan, pw = source.facts, source.assessment, source.plan, source.pathways
    steps = [
        {
            "rule": "R0",
            "title": "Data hygiene",
            "result": f"{facts.read} resources read, {facts.skipped} skipped",
            "detail": "Entered-in-error and refuted records are ignored (listed under ignored).",
        }
    ]
    fired = [f.kind for f in pw.flags] if pw is not None else []
    steps.append(
        {
            "rule": "R7",
            "title": "Red-flag pathways (run first, on their own evidence)",
            "result": ", ".join(fired) if fired else "none fired",
            "detail": "R7c anticoagulation floor: "
            + ("applies" if pw is not None and pw.floor is not None else "does not apply"),
        }
    )
    if source.too_many is not None:
        err = source.too_many
        steps.append(
            {
                "rule": "R4",
                "title": "Pairs of trigger and injection",
                "result": "too many records to assess",
                "detail": f"{err.triggers} trigger(s), {err.injections} injection(s)",
            }
        )
    if a is None:
        if source.kind == "none":
            steps.append(
                {
                    "rule": "R1-R6",
                    "title": "Attribution",
                    "result": "no attributable (foot drop, IM injection) pair",
                    "detail": f"{len(facts.injections)} IM injection(s) on record; "
                    f"{len(facts.not_im)} injection(s) not intramuscular",
                }
            )
        return steps
    trig, inj = a.trigger, a.injection
    steps += [
        {
            "rule": "R1",
            "title": "Foot-drop trigger",
            "result": trig.label,
            "detail": f"{trig.ref}; side {trig.side or 'not documented'}; "
            f"onset {_day(trig.lo) or 'unknown'} to {_day(trig.hi)}",
        },
        {
            "rule": "R2",
            "title": "IM injection evidence",
            "result": inj.evidence,
            "detail": f"{inj.ref} ({inj.kind}) on {_day(inj.time)}",
        },
        {
            "rule": "R3",
            "title": "Injection site",
            "result": inj.site_class or "not documented",
            "detail": f"site {inj.site_label or 'not documented'}; side "
            f"{inj.site_side or 'not documented'}",
        },
        {
            "rule": "R4",
            "title": "Time window",
            "result": a.timing_class,
            "detail": f"latest possible onset {a.delta.total_seconds() / 3600:.0f} h after the "
            f"injection; anchor {_day(a.anchor)}",
        },
        {
            "rule": "R5",
            "title": "Side",
            "result": "side unknown" if "cap-side-unknown" in a.caps else "same side",
            "detail": f"foot drop {trig.side or 'not documented'}, injection "
            f"{inj.site_side or 'not documented'}",
        },
        {
            "rule": "R6",
            "title": "Competing causes",
            "result": ", ".join(c.group for c in a.competing) or "none",
            "detail": f"lead: {a.lead or 'routine plan'}",
        },
        {
            "rule": "R9",
            "title": "Indicator",
            "result": a.indicator,
            "detail": "caps: " + (", ".join(a.caps) if a.caps else "none"),
        },
    ]
    if plan is not None and plan.recovery is not None:
        latest = plan.recovery.latest
        steps.append(
            {
                "rule": "R8a",
                "title": "Recovery",
                "result": plan.recovery.state,
                "detail": f"latest grade {latest.text} on {_day(latest.time)}"
                if latest is not None
                else "no post-onset grade",
            }
        )
    if plan is not None:
        steps.append(
            {
                "rule": "R8/R8b",
                "title": "Plan and de-duplication",
                "result": ", ".join(plan.suggest) or "nothing new suggested",
                "detail": "already on file: "
                + (", ".join(f"{e.what} ({e.ref})" for e in plan.existing) or "none"),
            }
        )
    return steps


def _red_flags(source: TraceInput) -> list[dict[str, Any]]:
    pw = source.pathways
    found = {f.kind: f for f in pw.flags} if pw is not None else {}
    if pw is not None and pw.floor is not None:
        found["anticoagulation"] = pw.floor
    out = []
    for pathway, kinds, title in PATHWAYS:
        hits = [found[k] for k in kinds if k in found]
        why = (
            "; ".join(label for f in hits for label in f.labels[:3]) or "fired"
            if hits
            else "not found on its own evidence"
        )
        out.append({"pathway": pathway, "title": title, "fired": bool(hits), "why": why})
    return out


def _competing(source: TraceInput) -> list[dict[str, Any]]:
    a = source.assessment
    if a is None:
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for c in a.competing:
        seen.add(c.ref)
        out.append(
            {
                "cause": c.label,
                "reference": c.ref or None,
                "decisive": True,
                "why": f"{c.group}: recent and on a compatible side; caps the card at info",
            }
        )
    content = source.content
    for template, label in a.named:
        out.append(
            {
                "cause": label,
                "reference": None,
                "decisive": False,
                "why": content.text(template, condition=label).removeprefix("- "),
            }
        )
    for cond in source.facts.conditions:
        if cond.ref in seen or cond.refuted or not cond.valuesets & COMPETING_VALUESETS:
            continue
        if any(label == cond.label for _, label in a.named):
            continue
        seen.add(cond.ref)
        out.append(
            {
                "cause": cond.label,
                "reference": cond.ref,
                "decisive": False,
                "why": "not current, on the other side or outside the R6 time window",
            }
        )
    return out


def _ignored(source: TraceInput) -> list[dict[str, str]]:
    facts, a = source.facts, source.assessment
    out = [
        {"reference": c.ref, "why": "refuted or entered in error (R0)"}
        for c in facts.conditions
        if c.refuted
    ]
    out += [
        {"reference": c.ref, "why": "foot drop not current (resolved, inactive or abated; R0)"}
        for c in facts.conditions
        if "footdrop-trigger" in c.valuesets and not c.current and not c.refuted
    ]
    out += [
        {"reference": ref, "why": "not an intramuscular injection (R2)"} for ref in facts.not_im
    ]
    tied = set(a.link) if a is not None else set()
    out += [
        {"reference": c.ref, "why": "link code not tied to the attributed injection (R1a)"}
        for c in facts.conditions
        if "link-code" in c.valuesets and not c.refuted and c.label not in tied
    ]
    return out


def _applies(rule: str, kind: str) -> bool:
    """Whether a threshold's rule was applied for this outcome (red flags run on every call)."""
    if rule.startswith("R7") or rule == "R7":
        return True
    if rule.startswith(("Prevention", "R8c")):
        return False
    return kind in ("attribution", "recovered", "too_many_records")


@functools.lru_cache(maxsize=32)
def _threshold_table(
    rows: tuple[ThresholdRow, ...], kind: str
) -> tuple[tuple[tuple[str, str, str], ...], tuple[tuple[str, str], ...]]:
    """(name, value, rule) of the thresholds applied and (id, text) of their citations."""
    applied = [r for r in rows if _applies(r.rule, kind)]
    citations: dict[str, str] = {"guideline": GUIDELINE}
    for row in applied:
        for part in row.evidence.split(";"):
            for eid in _EVIDENCE_ID.findall(part):
                citations.setdefault(eid, part.strip())
    ordered = sorted(citations.items(), key=lambda kv: (kv[0] != "guideline", len(kv[0]), kv[0]))
    return tuple((r.name, r.value, r.rule) for r in applied), tuple(ordered)


def _thresholds_and_citations(
    content: Content, kind: str
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rows, citations = _threshold_table(content.threshold_rows, kind)
    return (
        [{"name": n, "value": v, "rule": r} for n, v, r in rows],
        [{"id": k, "text": v} for k, v in citations],
    )


def _plan(source: TraceInput) -> list[dict[str, Any]]:
    plan, now = source.plan, source.now
    if plan is None:
        return []
    t = source.content.thresholds
    today = now.date()
    rows: list[dict[str, Any]] = []
    for order in plan.suggest:
        due: date | None = today
        end: date | None = None
        if order == "EMG_NCS":
            due = plan.emg_date or today
        elif order == "FOLLOW_UP":
            due, end = (now + t.follow_up_from).date(), (now + t.follow_up_to).date()
        rows.append(
            {
                "order": order,
                "label": _LABELS.get(order, order),
                "status": "suggested",
                "due": _day(due),
                "window_end": _day(end),
                "reference": None,
            }
        )
    for e in plan.existing:
        rows.append(
            {
                "order": e.what,
                "label": _LABELS.get(e.what, e.what),
                "status": "done" if e.status == "completed" else "already_ordered",
                "due": _day(e.when),
                "window_end": None,
                "reference": e.ref,
            }
        )
    held = list(_ROUTINE) if source.kind == "red_flag" else []
    if plan.repeat_emg_held:
        held.append("EMG_NCS")
    listed = {r["order"] for r in rows}
    for order in held:
        if order not in listed:
            listed.add(order)
            rows.append(
                {
                    "order": order,
                    "label": _LABELS[order],
                    "status": "held",
                    "due": None,
                    "window_end": None,
                    "reference": None,
                }
            )
    return rows


def _lines(notes: Sequence[str]) -> list[str]:
    """One Markdown sentence (or list item) per entry; a template may hold several lines."""
    return [line.strip() for note in notes for line in note.splitlines() if line.strip()]


def build_trace(source: TraceInput) -> dict[str, Any]:
    """The JSON-ready trace of one evaluation (see the module docstring for the contract)."""
    card = source.built.card if source.built is not None else None
    thresholds, citations = _thresholds_and_citations(source.content, source.kind)
    return {
        "service": SERVICE_ID,
        "evaluated_at": source.now.isoformat(),
        "today": _day(source.now),
        "time_zone": {
            "zone": source.zone,
            "assumptions": [
                f"dateTimes without an offset read in {source.zone}",
                "date-only values read as the whole day in the offset of the patient's IM "
                f"injection (else {source.zone})",
                f"'today' and every displayed date in {source.zone}",
            ],
        },
        "outcome": {
            "card": card is not None,
            "kind": source.kind,
            "indicator": card["indicator"] if card is not None else None,
            "summary": card["summary"] if card is not None else None,
        },
        "resources": _resources(source),
        "steps": _steps(source),
        "red_flags": _red_flags(source),
        "competing_causes": _competing(source),
        "thresholds": thresholds,
        "ignored": _ignored(source),
        "citations": citations,
        "page_notes": _lines(source.built.page_notes) if source.built is not None else [],
        "plan": _plan(source),
        "timeline": timeline(source),
    }
