"""Cards without suggestions: R8a "recovered", and a record too large to attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cds_service.domain.card import action_text, frame_card, make_uuid
from cds_service.domain.card_short import BuiltCard
from cds_service.domain.content import Content
from cds_service.domain.fhirtime import fhir_date
from cds_service.domain.pairs import TooManyRecordsError
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.plan import Plan
from cds_service.domain.rules import Assessment

__all__ = ["recovered_card", "too_many_records_card"]


def recovered_card(
    content: Content,
    a: Assessment,
    plan: Plan,
    *,
    hook_instance: str,
    floor: RedFlag | None = None,
    links: Sequence[Mapping[str, str]] | None = None,
) -> BuiltCard:
    """Foot drop recovered (latest same-side grade 5, or 4+): info, no AFO/PT/EMG/referral.

    An anticoagulation floor (R7c) still holds: the card is then a warning and starts with the
    R7c sentence (§4.6.3), still without routine suggestions for a recovered deficit.
    """
    latest = plan.recovery.latest if plan.recovery is not None else None
    grade = latest.text if latest is not None else "5/5"
    when = fhir_date(latest.time) if latest is not None else "date not recorded"
    side = a.trigger.side if a.trigger.side in ("left", "right") else "the affected"
    values: Mapping[str, str] = {
        "grade": grade,
        "date": when,
        "side": side,
        "condition": a.trigger.label,
        "injection": a.injection.label,
        "injection_date": fhir_date(a.injection.time),
    }
    detail = content.text("detail-recovered", **values)
    if floor is not None:
        detail = "\n\n".join(x for x in (action_text(content, floor), detail) if x)
    card = frame_card(
        content.footdrop,
        uuid_key=make_uuid(hook_instance, "card", "card:recovered"),
        summary=content.text("summary-recovered", **values),
        detail=detail,
        indicator="info" if floor is None else "warning",
        suggestions=[],
        links=links,
    )
    return BuiltCard(card)


def too_many_records_card(
    content: Content,
    error: TooManyRecordsError,
    *,
    hook_instance: str,
    links: Sequence[Mapping[str, str]] | None = None,
) -> BuiltCard:
    """Foot drop and IM injections on record, but more pairs than the engine may assess.

    Conservative: ``info``, no suggestions, the clinician reviews the record (red flags were
    judged before and are not affected).
    """
    values = {"triggers": str(error.triggers), "injections": str(error.injections)}
    card = frame_card(
        content.footdrop,
        uuid_key=make_uuid(hook_instance, "card", "card:too-many-records"),
        summary=content.text("summary-too-many", **values),
        detail=content.text("detail-too-many", **values),
        indicator="info",
        suggestions=[],
        links=links,
    )
    return BuiltCard(card)
