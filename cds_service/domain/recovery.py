"""R8a (clinical.md §4.3, §4.6.7): recovery states and the escalation they allow.

Grades are the same-side ankle-dorsiflexion grades taken after the onset of the current episode
(oldest first). Sub-grades order 4- < 4 < 4+ < 5; "<= 3" and "grades gained" use the integer part.

* **recovered**: the latest grade is 5, or 4+ (sub-grades charted) -- no recency limit. The card
  is ``info`` with no suggestions ("consider resolving the problem").
* **useful**: latest >= 3 and >= 1 grade above the post-onset nadir: no surgical referral, no
  tendon transfer, no repeat EMG; AFO only while the latest grade <= 3.
* **none** (no recovery; the only state that allows escalation): a grade taken >= 60 d after the
  anchor and <= 60 d before the evaluation that is <= 2, or <= 3 without a >= 1-grade gain.
* **ungraded**: no usable grade -- no escalation; the card asks to re-grade. A child under 5
  (grading unreliable) with a current Condition and no grade counts as no recovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cds_service.domain.content import Thresholds
from cds_service.domain.facts import GradeFact

__all__ = ["Recovery", "assess_recovery", "escalation_stage"]


@dataclass(frozen=True)
class Recovery:
    state: str  # recovered | useful | none | partial | ungraded
    latest: GradeFact | None = None
    nadir: GradeFact | None = None
    usable: bool = False  # the latest grade may decide an escalation (taken in the window)

    @property
    def allows_escalation(self) -> bool:
        return self.state == "none"

    @property
    def afo_needed(self) -> bool:
        """AFO: not after recovery; with useful recovery only while the latest grade <= 3."""
        if self.state == "recovered":
            return False
        return not (self.state == "useful" and self.latest is not None and self.latest.grade > 3)


def assess_recovery(
    grades: Sequence[GradeFact],
    anchor: datetime,
    now: datetime,
    t: Thresholds,
    *,
    young_child: bool = False,
    condition_current: bool = False,
) -> Recovery:
    """The recovery state of one side's episode from its post-onset grades (oldest first)."""
    if not grades:
        if young_child and condition_current:
            return Recovery("none", usable=True)
        return Recovery("ungraded")
    latest = grades[-1]
    nadir = min(grades, key=lambda g: (g.rank, g.time))
    if latest.grade == 5 or (latest.grade == 4 and latest.sub == "+"):
        return Recovery("recovered", latest, nadir)
    gained = latest.grade - nadir.grade >= t.recovery_min_gain
    usable = (
        latest.time >= anchor + t.recovery_grade_after_anchor
        and now - latest.time <= t.recovery_grade_max_age
    )
    if latest.grade >= 3 and gained:
        return Recovery("useful", latest, nadir, usable)
    no_recovery = latest.grade <= t.no_recovery_max_grade or (latest.grade <= 3 and not gained)
    if no_recovery and usable:
        return Recovery("none", latest, nadir, True)
    if no_recovery:
        return Recovery("ungraded", latest, nadir)  # a grade exists but cannot decide
    return Recovery("partial", latest, nadir, usable)  # 4-/4 without a documented gain


def escalation_stage(
    recovery: Recovery,
    grades: Sequence[GradeFact],
    anchor: datetime,
    now: datetime,
    t: Thresholds,
) -> str | None:
    """SURGICAL_REFERRAL stage (R8 amended by R8a), or None."""
    elapsed = now - anchor
    if elapsed >= t.tendon_transfer:
        if not recovery.allows_escalation:
            return None
        latest = recovery.latest
        if latest is None:  # a young child without grades
            return "TENDON_TRANSFER"
        late = latest.time >= anchor + t.tendon_transfer_grade_after_anchor
        if latest.grade <= t.no_recovery_max_grade and late:
            return "TENDON_TRANSFER"
        return None
    if elapsed >= t.surgical_decision:
        return "SURGICAL_DECISION" if recovery.allows_escalation else None
    if elapsed >= t.early_referral:
        late_grades = [g for g in grades if g.time >= anchor + t.early_referral]
        if late_grades and late_grades[-1].grade <= t.early_referral_max_grade:
            return "SURGICAL_EARLY"
    return None


def needs_regrade(recovery: Recovery, anchor: datetime, now: datetime, t: Thresholds) -> bool:
    """True when escalation is due by time but no usable grade decides it (R8a)."""
    return now - anchor >= t.surgical_decision and recovery.state == "ungraded"
