"""The rule trace as plain text, for informaticists without an EHR (``cds-service call --explain``).

Pure formatting of the JSON-ready trace of :func:`cds_service.domain.trace.explain_patient_view`:
every section, in the order a reviewer reads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["trace_text"]


def _rows(items: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    return [
        "  - " + "; ".join(f"{k}: {item.get(k)}" for k in keys if item.get(k) not in (None, ""))
        for item in items
    ]


def trace_text(trace: Mapping[str, Any], cards: Sequence[Mapping[str, Any]] = ()) -> str:
    """Every section of the trace (and the card it explains) as indented text."""
    outcome = trace["outcome"]
    zone = trace["time_zone"]
    lines = [
        f"{trace['service']}: evaluated {trace['evaluated_at']} (today {trace['today']})",
        f"Outcome: {outcome['kind']}"
        + (f", {outcome['indicator']} card" if outcome["card"] else ", no card"),
    ]
    for card in cards:
        lines += ["", "Card", f"  summary: {card['summary']}"]
        lines += ["  " + line for line in str(card.get("detail", "")).splitlines()]
    lines += ["", f"Time zone: {zone['zone']}"]
    lines += [f"  - {a}" for a in zone["assumptions"]]
    lines += ["", "Rule steps"]
    lines += [
        f"  {s['rule']:<7} {s['title']}: {s['result']}"
        + (f" ({s['detail']})" if s["detail"] else "")
        for s in trace["steps"]
    ]
    lines += ["", "Red-flag pathways checked"]
    lines += [
        f"  {f['pathway']} {f['title']}: {'FIRED' if f['fired'] else 'no'} ({f['why']})"
        for f in trace["red_flags"]
    ]
    sections: list[tuple[str, list[str]]] = [
        ("Resources used", _rows(trace["resources"], ("role", "reference", "date", "note"))),
        (
            "Competing causes considered",
            _rows(trace["competing_causes"], ("cause", "reference", "decisive", "why")),
        ),
        ("Ignored", _rows(trace["ignored"], ("reference", "why"))),
        (
            "Plan",
            _rows(trace["plan"], ("label", "status", "due", "window_end", "reference")),
        ),
        ("Moved from the card to the page (R9a)", [f"  {n}" for n in trace["page_notes"]]),
        ("Thresholds applied", _rows(trace["thresholds"], ("name", "value", "rule"))),
        ("Citations", [f"  - {c['id']}: {c['text']}" for c in trace["citations"]]),
    ]
    timeline = trace["timeline"]
    sections.append(
        (
            f"Timeline (anchor {timeline['anchor'] or 'none'}, today {timeline['today']})",
            _rows(timeline["injections"], ("date", "site", "side", "reference"))
            + (
                [
                    f"  - onset {timeline['onset']['earliest'] or '?'} to "
                    f"{timeline['onset']['latest']} ({timeline['onset']['reference']})"
                ]
                if timeline["onset"]
                else []
            )
            + _rows(timeline["grades"], ("date", "side", "muscle", "grade", "reference"))
            + _rows(timeline["orders"], ("date", "kind", "status", "reference"))
            + _rows(timeline["milestones"], ("start", "end", "label")),
        )
    )
    for title, body in sections:
        lines += ["", title, *(body or ["  (none)"])]
    return "\n".join(lines) + "\n"
