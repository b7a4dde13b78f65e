"""Risk factors named on a prevention card (child, older age, underweight, anticoagulation; E5).

They never change the indicator. Split out of :mod:`prevention`, which re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.domain.card import age_years
from cds_service.domain.content import Content
from cds_service.domain.facts import BmiFact, Facts, medication_name, names_anticoagulant

__all__ = ["CLOSED_STATUSES", "RiskFactors", "risk_factors"]

#: MedicationRequest statuses that will not lead to an injection (nothing to prevent).
CLOSED_STATUSES = frozenset({"entered-in-error", "cancelled", "stopped", "completed"})
#: What reading a malformed resource can raise (as in :mod:`facts`): skipped, never fatal.
UNREADABLE = (AttributeError, TypeError, ValueError, KeyError, IndexError)


def _status(resource: Mapping[str, Any]) -> str | None:
    status = resource.get("status")
    return status if isinstance(status, str) else None


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
