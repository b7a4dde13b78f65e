"""The clinical decision engine: one patient-view request in, at most one card out.

``evaluate_patient_view`` is the only entry point the web layer calls. It is pure (``now`` and the
content are passed in), dispatches on ``resourceType`` (never on the prefetch key), and never raises
on malformed input: a resource it cannot read is skipped and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any

from cds_service.domain.card import age_years, attribution_card
from cds_service.domain.content import Content
from cds_service.domain.facts import extract_facts
from cds_service.domain.localtime import site_zone
from cds_service.domain.mrc import MrcCodes, MrcRow
from cds_service.domain.pairs import TooManyRecordsError
from cds_service.domain.pathways import run_pathways
from cds_service.domain.pathways.anticoagulation import with_floor
from cds_service.domain.plan import plan_attribution, plan_red_flags
from cds_service.domain.recovery_card import recovered_card, too_many_records_card
from cds_service.domain.redflag_card import red_flag_card
from cds_service.domain.rules import best_assessment, condition_triggers

__all__ = ["Evaluation", "Policy", "evaluate_patient_view"]

ORDER_INTENTS = frozenset({"proposal", "order"})


@dataclass(frozen=True)
class Policy:
    """Local policy (settings ``CDS_ORDER_INTENT``, ``CDS_SITE_TIMEZONE``, ``CDS_MRC_*``)."""

    order_intent: str = "proposal"  # "proposal" | "order"
    site_time_zone: str = "UTC"  # R0a: IANA name; dateTimes without offset, "today"
    mrc_code_system: str = ""  # R1b: the site-owned code system of MRC grade codes
    mrc_rows: tuple[MrcRow, ...] | None = None  # R1b: site mapping; None = the content's file

    def __post_init__(self) -> None:
        if self.order_intent not in ORDER_INTENTS:
            raise ValueError(f"order_intent must be one of {sorted(ORDER_INTENTS)}")
        site_zone(self.site_time_zone)  # ValueError for an unknown zone

    @property
    def zone(self) -> tzinfo:
        return site_zone(self.site_time_zone)

    def mrc(self, content: Content) -> MrcCodes:
        rows = content.mrc_rows if self.mrc_rows is None else self.mrc_rows
        return MrcCodes(rows=tuple(rows), code_system=self.mrc_code_system)


@dataclass(frozen=True)
class Evaluation:
    cards: list[dict[str, Any]]  # JSON-ready CDS Hooks 2.0 cards (0 or 1 for patient-view)
    resources_read: int
    resources_skipped: int  # malformed resources: skipped and counted, never fatal


def evaluate_patient_view(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy = Policy(),
) -> Evaluation:
    """Run R0-R9 over the flattened prefetch resources and build the card (if any)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(policy.zone)  # R0a: "today" and displayed dates in the site time zone
    patient_id = context.get("patientId")
    patient_id = patient_id if isinstance(patient_id, str) else ""
    facts = extract_facts(
        resources if resources is not None else (),
        content,
        patient_id,
        now,
        site_zone=policy.zone,
        mrc=policy.mrc(content),
    )
    t = content.thresholds
    cards: list[dict[str, Any]] = []
    # R7a-R7f first, each on its own evidence, before and regardless of attribution (§4.0)
    pathways = run_pathways(facts, now, content)
    if pathways.flags:
        plan = plan_red_flags(facts, pathways.flags, now, t)
        cards.append(
            red_flag_card(
                content,
                facts,
                pathways.flags,
                plan,
                triggers=pathways.triggers,
                floor=pathways.floor,
                context=context,
                now=now,
                hook_instance=hook_instance,
                intent=policy.order_intent,
            )
        )
        return Evaluation(cards=cards, resources_read=facts.read, resources_skipped=facts.skipped)
    triggers = condition_triggers(facts, now)
    assessment = None
    if triggers or facts.findings or facts.grades:
        try:
            assessment = best_assessment(facts, triggers, t)
        except TooManyRecordsError as error:
            cards.append(too_many_records_card(content, error, hook_instance=hook_instance))
            return Evaluation(cards, facts.read, facts.skipped)
    if pathways.floor is not None:  # R7c: at least warning, routine plan kept
        assessment = with_floor(facts, assessment, pathways.floor, t)
    if assessment is not None:
        age = age_years(facts.birth_date, now)
        young = age is not None and age < t.child_grading_unreliable_age
        plan = plan_attribution(facts, assessment, now, t, young_child=young)
        if plan.recovery is not None and plan.recovery.state == "recovered":
            cards.append(
                recovered_card(
                    content, assessment, plan, hook_instance=hook_instance, floor=pathways.floor
                )
            )
            return Evaluation(cards, facts.read, facts.skipped)
        cards.append(
            attribution_card(
                content,
                facts,
                assessment,
                plan,
                context=context,
                now=now,
                hook_instance=hook_instance,
                intent=policy.order_intent,
                floor=pathways.floor,
                named=[content.text(name, **dict(values)) for name, values in pathways.named],
            )
        )
    return Evaluation(cards=cards, resources_read=facts.read, resources_skipped=facts.skipped)
