"""The R8a "recovered" card: info, no suggestions, "consider resolving the problem"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.domain.card import action_text, frame_card, make_uuid
from cds_service.domain.content import Content
from cds_service.domain.fhirtime import fhir_date
from cds_service.domain.pathways.base import RedFlag
from cds_service.domain.plan import Plan
from cds_service.domain.rules import Assessment

__all__ = ["recovered_card"]


def recovered_card(
    content: Content,
    a: Assessment,
    plan: Plan,
    *,
    hook_instance: str,
    floor: RedFlag | None = None,
) -> dict[str, Any]:
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
    return frame_card(
        content.footdrop,
        uuid_key=make_uuid(hook_instance, "card"),
        summary=content.text("summary-recovered", **values),
        detail=detail,
        indicator="info" if floor is None else "warning",
        suggestions=[],
    )
