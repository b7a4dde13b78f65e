"""The rule trace: one pure function that returns the card *and* the trace it is built from.

``explain_patient_view`` runs R0-R9 once (clinical.md §4.0 order) and returns an
:class:`Explanation`: the CDS Hooks cards (what ``evaluate_patient_view`` answers) and a JSON-ready
trace — every resource used with its role, the rule steps, the red-flag pathways checked, the
competing causes considered, the thresholds, what was ignored, the citations, the sentences R9a
moved from the card to the app page, the plan and the timeline. The SMART app page renders the
trace, so the page and the card never disagree. The trace's keys are a contract (see
``trace_parts``); keys may be added, never renamed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cds_service.domain.card import age_years, attribution_card
from cds_service.domain.card_short import BuiltCard
from cds_service.domain.content import Content
from cds_service.domain.facts import extract_facts
from cds_service.domain.pairs import TooManyRecordsError
from cds_service.domain.pathways import run_pathways
from cds_service.domain.pathways.anticoagulation import with_floor
from cds_service.domain.plan import plan_attribution, plan_red_flags
from cds_service.domain.policy import DEFAULT_POLICY, Policy
from cds_service.domain.recovery_card import recovered_card, too_many_records_card
from cds_service.domain.redflag_card import red_flag_card, red_flag_refs
from cds_service.domain.rules import best_assessment, condition_triggers
from cds_service.domain.trace_parts import TraceInput, build_trace

__all__ = ["SERVICE_ID", "Explanation", "app_link", "explain_patient_view"]

SERVICE_ID = "footdrop-im-injection"
LINK_LABEL = "Evidence and timeline"


@dataclass(frozen=True)
class Explanation:
    """The cards (0 or 1 for patient-view) and the rule trace they were built from.

    ``trace`` is assembled on first access from the very objects the cards were built from, so
    the web layer's hook call (cards only) does not pay for it.
    """

    cards: list[dict[str, Any]]
    source: TraceInput
    resources_read: int = 0
    resources_skipped: int = 0

    @functools.cached_property
    def trace(self) -> dict[str, Any]:
        """The JSON-ready rule trace (contract: :mod:`cds_service.domain.trace_parts`)."""
        return build_trace(self.source)


def app_link(
    policy: Policy, kind: str, trigger: str | None, injections: Sequence[str]
) -> list[dict[str, str]] | None:
    """R9a: the card's one SMART link, or None (keep the content's links) without a launch URL.

    ``appContext`` names what to open with FHIR references only: no names, identifiers or text.
    """
    if not policy.app_launch_url:
        return None
    context = {
        "service": SERVICE_ID,
        "kind": kind,
        "trigger": trigger if trigger and "/" in trigger else None,
        "injections": [r for r in dict.fromkeys(injections) if r and "/" in r],
    }
    return [
        {
            "label": LINK_LABEL,
            "url": policy.app_launch_url,
            "type": "smart",
            "appContext": json.dumps(context, separators=(",", ":"), sort_keys=True),
        }
    ]


def explain_patient_view(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy = DEFAULT_POLICY,
) -> Explanation:
    """Run R0-R9 over the flattened prefetch resources: the card (if any) and its trace."""
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
    # R7a-R7f first, each on its own evidence, before and regardless of attribution (§4.0)
    pathways = run_pathways(facts, now, content)

    def done(kind: str, **found: Any) -> Explanation:
        source = TraceInput(
            content, facts, now, policy.site_time_zone, kind=kind, pathways=pathways, **found
        )
        return _explained(source)

    if pathways.flags:
        plan = plan_red_flags(facts, pathways.flags, now, t)
        trigger, injections = red_flag_refs(facts, pathways.triggers, now, t)
        built = red_flag_card(
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
            links=app_link(policy, "red_flag", trigger, injections),
        )
        return done("red_flag", built=built, plan=plan)
    triggers = condition_triggers(facts, now)
    assessment = None
    if triggers or facts.findings or facts.grades:
        try:
            assessment = best_assessment(facts, triggers, t)
        except TooManyRecordsError as error:
            built = too_many_records_card(
                content,
                error,
                hook_instance=hook_instance,
                links=app_link(policy, "too_many_records", None, ()),
            )
            return done("too_many_records", built=built, too_many=error)
    if pathways.floor is not None:  # R7c: at least warning, routine plan kept
        assessment = with_floor(facts, assessment, pathways.floor, t)
    if assessment is None:
        return done("none")
    age = age_years(facts.birth_date, now)
    young = age is not None and age < t.child_grading_unreliable_age
    plan = plan_attribution(facts, assessment, now, t, young_child=young)
    pair = (assessment.trigger.ref, [assessment.injection.ref])
    if plan.recovery is not None and plan.recovery.state == "recovered":
        built = recovered_card(
            content,
            assessment,
            plan,
            hook_instance=hook_instance,
            floor=pathways.floor,
            links=app_link(policy, "recovered", *pair),
        )
        return done("recovered", built=built, assessment=assessment, plan=plan)
    built = attribution_card(
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
        links=app_link(policy, "attribution", *pair),
    )
    return done("attribution", built=built, assessment=assessment, plan=plan)


def _explained(source: TraceInput) -> Explanation:
    built: BuiltCard | None = source.built
    cards = [built.card] if built is not None else []
    return Explanation(
        cards=cards,
        source=source,
        resources_read=source.facts.read,
        resources_skipped=source.facts.skipped,
    )
