"""R8b (clinical.md §4.4, §4.6.9): which existing orders suppress a suggestion.

* Status: active, on-hold or completed suppress; draft only when authored <= 2 d ago (an unsigned
  order of this encounter); revoked, cancelled, entered-in-error, unknown never do.
* Recency: AFO active/on-hold authored on/after the injection's local date, completed <= 12 months
  and on/after it; PT the same with <= 12 weeks. "Completed ... ago" is measured from the order's
  occurrence end (occurrencePeriod.end, else occurrenceDateTime), else its authoredOn.
* AFO side (DeviceRequest has no bodySite in R4): parameter codes, a bodySite extension, then the
  text; same side or bilateral suppresses, the other side does not, an unknown side suppresses only
  when authored on/after the injection date (the card asks to confirm the side).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cds_service.domain.facts import OrderFact

__all__ = ["OPEN_STATUSES", "afo_side_matches", "counts", "recent_completed"]

OPEN_STATUSES = frozenset({"active", "on-hold"})
NEVER = frozenset({"revoked", "cancelled", "entered-in-error", "unknown"})


def counts(order: OrderFact, now: datetime, draft_recent: timedelta) -> bool:
    """R8b status rule: may this order suppress anything at all?"""
    if order.status in OPEN_STATUSES or order.status == "completed":
        return True
    if order.status == "draft":
        return order.authored is not None and now - order.authored <= draft_recent
    return False


def _on_or_after(moment: datetime | None, since: datetime) -> bool:
    return moment is not None and moment.date() >= since.date()


def recent_completed(order: OrderFact, now: datetime, since: datetime, within: timedelta) -> bool:
    """Completed within ``within`` (occurrence end, else authoredOn) and on/after ``since``."""
    done = order.occurrence_end or order.occurrence or order.authored
    return done is not None and now - done <= within and _on_or_after(done, since)


def suppresses(
    order: OrderFact,
    now: datetime,
    since: datetime,
    *,
    completed_within: timedelta | None,
    draft_recent: timedelta,
    open_since: bool = True,
) -> bool:
    """AFO / PT / referral rule: open and authored on/after ``since``, or recently completed.

    ``completed_within`` None keeps the old rule (completed and authored on/after ``since``);
    ``open_since`` False lets an active / on-hold order count whatever its date (referrals, R8).
    """
    if not counts(order, now, draft_recent):
        return False
    if order.status == "completed":
        if completed_within is None:
            return _on_or_after(order.authored, since)
        return recent_completed(order, now, since, completed_within)
    if order.status == "draft" or not open_since:
        return True
    return order.authored is None or _on_or_after(order.authored, since)


def afo_side_matches(order: OrderFact, side: str | None, since: datetime) -> bool | None:
    """True: same side / bilateral; False: the other side; None: side of the AFO unknown."""
    if order.side is None:
        return None
    if side not in ("left", "right") or order.side == "bilateral":
        return True
    return order.side == side
