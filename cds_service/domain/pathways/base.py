"""What every red-flag pathway shares (clinical.md §4.1): the finding type and its inputs.

A pathway is a pure function over the facts, the current triggers, ``now`` and the thresholds; it
returns a :class:`RedFlag` (with the references of the evidence it used) or None. Pathways run
before, and regardless of, attribution (site, window, side, competing causes, the injection's
indication): no attribution rule ever removes a red flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import ConditionFact, Facts, InjectionFact
from cds_service.domain.rules import Trigger, condition_triggers

DORSIFLEXION = "ankle-dorsiflexion"
#: §4.6.3: the order of the action sentences (and of the flags on the card).
PRECEDENCE = (
    "afp",
    "afp-any-age",
    "haematoma",
    "compartment",
    "bilateral",
    "cauda-equina",
    "progression",
    "anticoagulation",
)

Values = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class RedFlag:
    """A pathway's finding. ``critical`` False = the R7c warning floor (not a red flag)."""

    kind: str
    orders: tuple[str, ...]  # URGENT_* order ids (one URGENT_EVAL per distinct code)
    evidence: tuple[str, ...]  # references of the resources used
    labels: tuple[str, ...]
    onset: datetime | None
    critical: bool = True
    action: str = ""  # template of the action sentence that starts the detail
    values: Values = ()  # its placeholders
    notes: tuple[tuple[str, Values], ...] = ()  # further sentences (template, placeholders)
    trigger: Trigger | None = None
    injection: InjectionFact | None = None
    extra: tuple[str, ...] = field(default=())  # free markers (e.g. "anticoagulated")

    @property
    def order(self) -> str:
        """The first URGENT order (revision-1 callers)."""
        return self.orders[0] if self.orders else ""


def earliest(trig: Trigger) -> datetime:
    """The earliest known time of a trigger's onset (lo, else its latest possible onset)."""
    return trig.lo if trig.lo is not None else trig.hi


def condition_start(c: ConditionFact) -> datetime | None:
    """Earliest known date of a Condition (onset lo, else onset/recordedDate hi)."""
    return c.onset_lo if c.onset_lo is not None else c.onset_hi


def same_leg(a: str | None, b: str | None) -> bool:
    """Same side, either bilateral, or both unknown (used to call weakness pre-existing)."""
    return a == b or "bilateral" in (a, b)


def current_triggers(facts: Facts, now: datetime, t: Thresholds) -> list[Trigger]:
    """Every current foot-drop trigger, whatever any injection: Conditions (R0/R1), findings
    present and MRC dorsiflexion grades <= mrc_trigger_max with a side.

    An Observation is not used on a side whose foot-drop Condition is refuted or entered in error.
    """
    out = condition_triggers(facts, now)
    refuted: set[str | None] = set()
    for c in facts.conditions:
        if "footdrop-trigger" in c.valuesets and c.refuted:
            refuted |= {"left", "right", None} if c.side in (None, "bilateral") else {c.side}
    for f in facts.findings:
        if f.side not in refuted:
            out.append(
                Trigger(f.ref, "finding", "Foot drop finding (Observation)", f.side, None, f.time)
            )
    for g in facts.grades:
        if (
            g.movement == DORSIFLEXION
            and g.side is not None
            and g.side not in refuted
            and g.grade <= t.mrc_trigger_max
        ):
            out.append(
                Trigger(g.ref, "grade", f"MRC dorsiflexion grade {g.grade}/5", g.side, None, g.time)
            )
    return out


def anticoagulation_evidence(facts: Facts, lo: datetime, hi: datetime) -> list[tuple[str, str]]:
    """(reference, label) of anticoagulation lying in the exposure window [lo, hi] (R7c).

    A current Z79.01 / D68.32 without abatement counts whatever its dates (§4.6.2); T45.515A/D
    when current and dated inside the window (or undated); drugs and INR by their exposure.
    """
    out: list[tuple[str, str]] = [(e.ref, e.label) for e in facts.exposures if e.overlaps(lo, hi)]
    for c in facts.conditions_in("anticoagulation"):
        if not c.current:
            continue
        long_term = any(
            m.code.replace(".", "").upper().startswith(("Z7901", "D6832")) for m in c.matches
        )
        start = condition_start(c)
        if long_term or start is None or (start <= hi and (c.onset_hi or start) >= lo):
            out.append((c.ref, c.label))
    return out


def flag_sorted(flags: Sequence[RedFlag]) -> list[RedFlag]:
    """Flags in §4.6.3 order."""
    return sorted(flags, key=lambda f: PRECEDENCE.index(f.kind) if f.kind in PRECEDENCE else 99)
