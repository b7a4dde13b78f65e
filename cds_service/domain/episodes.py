"""R1a (clinical.md §4.3): one foot-drop event per side, sequela codes, tied link codes.

* A side whose foot drop began before the injection (a same-side trigger with hi < t, not abated
  before t), or that carries a sequela code (7th character S) from before the injection, has a
  *pre-existing* event: every later trigger on that side is the same event, so no attribution
  card for that side (red flags are evaluated elsewhere and still run).
* Sequela (S) and subsequent-encounter (D) codes never start an attribution.
* Resolved / inactive / remission Conditions block only their own side, and only up to their
  abatement date; a later trigger or Observation on that side is a new event.
* A link code T80.89XA / T80.89XD counts for a (trigger, injection) pair only when tied to it:
  by a Reference in its evidence, or by a date within +-2 calendar days (``link_code_within``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cds_service.domain.facts import ConditionFact, Facts, GradeFact, InjectionFact

__all__ = [
    "abatement_blocks",
    "preexisting_sides",
    "starts_event",
    "tied_links",
]

TRIGGER = "footdrop-trigger"
LINK = "link-code"
NEVER_START = frozenset({"S", "D"})


def _sides(side: str | None) -> set[str]:
    if side == "bilateral":
        return {"left", "right"}
    return {side} if side in ("left", "right") else set()


def starts_event(condition: ConditionFact | None) -> bool:
    """False for sequela (S) and subsequent-encounter (D) codes: they never start an event."""
    return condition is None or condition.seventh not in NEVER_START


def _first_evidence(c: ConditionFact) -> datetime | None:
    """Latest possible onset when onset[x] is given, else the recordedDate."""
    if c.has_onset and c.onset_hi is not None:
        return c.onset_hi
    return c.recorded or c.onset_hi


def preexisting_sides(facts: Facts, injection: InjectionFact) -> dict[str, datetime | None]:
    """Sides whose foot-drop event began before ``injection`` (R1a), with the date it ended.

    The value is the event's abatement (a later trigger on that side starts a new event), or
    None while it has not abated (every later trigger on that side is the same event).
    """
    t = injection.time
    out: dict[str, datetime | None] = {}

    def mark(sides: set[str], until: datetime | None) -> None:
        for side in sides:
            if side in out and out[side] is None:
                continue
            current = out.get(side)
            if until is None or side not in out or (current is not None and until > current):
                out[side] = until

    for c in facts.pair_conditions:
        if TRIGGER not in c.valuesets or c.refuted:
            continue
        sides = _sides(c.side)
        if c.seventh == "S":
            first = _first_evidence(c)
            if first is None or first < t:
                mark(sides, None)
            continue
        if c.onset_hi is None or not c.has_onset or c.onset_hi >= t:
            continue  # began at or after the injection, or only a recordedDate (an upper bound)
        if c.current:
            mark(sides, None)
        elif c.abated_at is not None and c.abated_at.date() >= t.date():
            mark(sides, c.abated_at)  # still present at the injection, abated later
        # abated before the injection, or resolved on an unknown date: that episode is over
    for g in facts.grades:
        weak_before = g.side in ("left", "right") and g.time < t and g.grade <= 3
        if weak_before and not _recovered_before(facts, g, t) and g.side is not None:
            mark({g.side}, None)
    for f in facts.findings:
        if f.time < t:
            mark(_sides(f.side), None)
    return out


def _recovered_before(facts: Facts, weak: GradeFact, t: datetime) -> bool:
    """A weak pre-injection grade followed by a same-side 5/5 before the injection is over."""
    return any(
        g.side == weak.side and weak.time < g.time < t and g.grade == 5 for g in facts.grades
    )


def abatement_blocks(facts: Facts) -> dict[str, datetime | None]:
    """Side -> the date up to which a non-current foot-drop Condition blocks Observations.

    ``None`` blocks without limit (refuted / entered-in-error: the finding is denied). Keys are
    left, right and unknown (an unlateralised Condition blocks only unlateralised Observations).
    """
    out: dict[str, datetime | None] = {}

    def put(side: str, until: datetime | None) -> None:
        if side in out and out[side] is None:
            return
        if until is None:
            out[side] = None
        else:
            current = out.get(side)
            if side not in out or (current is not None and until > current):
                out[side] = until

    for c in facts.pair_conditions:
        if TRIGGER not in c.valuesets or c.current:
            continue
        sides = _sides(c.side) or {"unknown"}
        until = None if c.refuted else (c.abated_at or c.recorded or c.onset_hi)
        if not c.refuted and until is None:
            continue
        for side in sides:
            put(side, until)
    return out


def blocked(blocks: dict[str, datetime | None], side: str | None, when: datetime) -> bool:
    """True when an Observation on ``side`` at ``when`` is blocked (on or before the abatement)."""
    for s in _sides(side) or {"unknown"}:
        if s not in blocks:
            continue
        until = blocks[s]
        if until is None or when.date() <= until.date():
            return True
    return False


def _calendar_days(a: datetime, b: datetime) -> int:
    return abs((a.date() - b.date()).days)


def tied_links(
    facts: Facts,
    trigger_ref: str,
    trigger_label: str,
    trigger_onset: datetime | None,
    trigger_evidence: Iterable[str],
    injection: InjectionFact,
    within: timedelta,
) -> list[str]:
    """Labels of the link codes tied to this (trigger, injection) pair (R1a).

    Tied by a Reference (the link Condition's evidence names the injection or the trigger, or
    the trigger's evidence names the injection), or by date: the link code's latest possible
    onset (else recordedDate) within ``within`` calendar days of the injection's or the
    trigger's local onset date. Sequela link codes (T80.89XS) never support an attribution.
    """
    days = within.days
    out: list[str] = []
    for c in facts.pair_conditions:
        if LINK not in c.valuesets or c.refuted or c.seventh == "S":
            continue
        if injection.ref and (injection.ref in c.evidence_refs or trigger_ref in c.evidence_refs):
            out.append(c.label)
            continue
        when = (c.onset_lo or c.onset_hi) if c.has_onset else (c.recorded or c.onset_hi)
        if when is None:
            continue
        near = _calendar_days(when, injection.time) <= days
        if trigger_onset is not None:
            near = near or _calendar_days(when, trigger_onset) <= days
        if near:
            out.append(c.label)
    if injection.ref and injection.ref in set(trigger_evidence):
        out.append(trigger_label)
    return out
