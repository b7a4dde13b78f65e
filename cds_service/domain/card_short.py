"""R9a (clinical.md §4.4): the short card's action line, the summary's action, and the card built
with the sentences it moves to the app page.

A card is read in a narrow side panel in seconds: the summary says the finding and the action in
under 140 characters, the detail keeps the action, one line of why and the held / already-ordered
notes; every other sentence is returned as ``page_notes`` for the rule trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.plan import Plan

__all__ = ["SUMMARY_MAX", "BuiltCard", "fit_summary", "short_actions", "summary_actions"]

SUMMARY_MAX = 139


@dataclass(frozen=True)
class BuiltCard:
    """A card and the sentences R9a moves from it to the app page (the trace's page_notes)."""

    card: dict[str, Any]
    page_notes: tuple[str, ...] = ()


_SHORT = {
    "AFO": "short-afo",
    "PT_REFERRAL": "short-pt",
    "FOLLOW_UP": "short-follow-up",
    "SURGICAL_EARLY": "short-early",
    "SURGICAL_DECISION": "short-decision",
    "TENDON_TRANSFER": "short-tendon",
}
_SUMMARY = {
    "AFO": "summary-afo",
    "PT_REFERRAL": "summary-pt",
    "FOLLOW_UP": "summary-follow-up",
    "SURGICAL_EARLY": "summary-early",
    "SURGICAL_DECISION": "summary-decision",
    "TENDON_TRANSFER": "summary-tendon",
}


def short_actions(
    content: Content,
    suggest: Sequence[str],
    *,
    not_before: str,
    follow: tuple[date, date],
    days: int,
    central: bool,
) -> str:
    """R9a: the suggested orders as one action line (the card keeps it; details go to the page)."""
    parts = []
    for order_id in suggest:
        if order_id == "EMG_NCS":
            name = "short-emg-central" if central else "short-emg"
            parts.append(content.phrase(name, not_before=not_before))
        elif order_id == "FOLLOW_UP":
            parts.append(content.phrase("short-follow-up", **{"from": follow[0], "to": follow[1]}))
        elif order_id in _SHORT:
            parts.append(content.phrase(_SHORT[order_id], days=days))
    text = "; ".join(parts) or content.phrase("short-none")
    return text[:1].upper() + text[1:]


def summary_actions(content: Content, plan: Plan) -> list[str]:
    """R9a: the action of the summary in a few words ("AFO, PT, EMG/NCS from 2025-07-02"),
    then shorter forms (the first orders only) for a summary that would not fit."""
    parts = []
    for order_id in plan.suggest:
        if order_id == "EMG_NCS":
            when = plan.emg_date or plan.emg_not_before
            parts.append(content.phrase("summary-emg", date=when))
        elif order_id in _SUMMARY:
            parts.append(content.phrase(_SUMMARY[order_id]))
    if not parts:
        return [content.phrase("summary-none")]
    return [", ".join(parts[:n]) for n in range(len(parts), 0, -1)]


def _without(text: str, part: str) -> str:
    """``text`` without the last occurrence of ``part``."""
    head, found, tail = text.rpartition(part)
    return head + tail if found else text


def fit_summary(candidates: Sequence[str]) -> str:
    """The first candidate under the CDS Hooks limit (< 140 characters), else the last, clipped."""
    for text in candidates:
        if len(" ".join(text.split())) <= SUMMARY_MAX:
            return text
    return candidates[-1]
