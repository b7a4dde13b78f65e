"""``cds-service feedback-report``: what clinicians did with each kind of card, named from content.

Feedback carries only uuids. Cards and suggestions are issued with uuids whose first 4 bytes
name what they are (``make_uuid(..., tag=...)``: ``card:foot-drop``, ``suggestion:AFO``,
``prevention-target:deltoid``); the report hashes every tag the content can produce and reads the
names back. No patient data is stored or needed. Cards issued before tagged uuids (or by another
version's content) are reported as "unrecognised".
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from cds_service.domain.card import tag_prefix
from cds_service.domain.content import Content
from cds_service.edge.feedback_store import StoredItem

#: Card kinds the engine issues (the tag after ``card:``) and how the report names them.
CARD_KINDS = {
    "foot-drop": "Foot drop after IM injection",
    "recovered": "Foot drop recovered",
    "too-many-records": "Too many records to assess",
    "red-flag": "Red flag: same-day review",
    "prevention": "IM injection site (prevention)",
}
UNRECOGNISED = "unrecognised (issued before card kinds were tagged)"
_PLACEHOLDER = re.compile(r"\$\{?\w+\}?")


@dataclass(frozen=True)
class Names:
    """Tag prefixes → names, and override reason codes → their display text."""

    cards: dict[bytes, str]
    suggestions: dict[bytes, str]
    reasons: dict[tuple[str, str], str]

    def card(self, card_uuid: str) -> str:
        return self.cards.get(_prefix(card_uuid), UNRECOGNISED)

    def suggestion(self, suggestion_uuid: str) -> str:
        return self.suggestions.get(_prefix(suggestion_uuid), "unrecognised suggestion")


def _prefix(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes[:4]
    except ValueError:
        return b""


def names_from(content: Content) -> Names:
    """Every tag the content can issue, hashed, with its name."""
    cards = {tag_prefix(f"card:{kind}"): name for kind, name in CARD_KINDS.items()}
    suggestions = {}
    for order_id, spec in content.orders.items():
        template = spec.texts.get("label")
        label = _PLACEHOLDER.sub("…", template.template) if template is not None else order_id
        suggestions[tag_prefix(f"suggestion:{order_id}")] = label
    for phrase in content.phrases:
        if phrase.startswith("prevention-target-"):
            kind = phrase.removeprefix("prevention-target-")
            kind = "ventrogluteal" if kind == "one" else kind
            site = content.phrase(phrase, side="left or right")
            suggestions[tag_prefix(f"prevention-target:{kind}")] = f"Inject into {site}"
    reasons = {}
    for framing in (content.footdrop, content.prevention):
        for reason in framing.override_reasons:
            reasons[str(reason["system"]), str(reason["code"])] = str(reason["display"])
    return Names(cards, suggestions, reasons)


@dataclass
class KindSummary:
    """Latest outcomes of one kind of card from one service."""

    service_id: str
    card: str
    accepted: int = 0
    overridden: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    suggestions: Counter[str] = field(default_factory=Counter)

    @property
    def cards(self) -> int:
        return self.accepted + self.overridden

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.cards if self.cards else 0.0

    @property
    def override_rate(self) -> float:
        return self.overridden / self.cards if self.cards else 0.0


@dataclass(frozen=True)
class Week:
    """Outcomes in the ISO week starting ``monday`` (UTC)."""

    monday: date
    accepted: int
    overridden: int

    @property
    def acceptance_rate(self) -> float:
        total = self.accepted + self.overridden
        return self.accepted / total if total else 0.0


@dataclass(frozen=True)
class Report:
    kinds: list[KindSummary]
    weeks: list[Week]

    @property
    def cards(self) -> int:
        return sum(kind.cards for kind in self.kinds)


def build_report(items: Iterable[StoredItem], names: Names) -> Report:
    """Group the latest outcome of every card by service and kind, and by week."""
    kinds: dict[tuple[str, str], KindSummary] = {}
    weeks: dict[date, list[int]] = {}
    for item in items:
        card = names.card(item.card_uuid)
        summary = kinds.setdefault(
            (item.service_id, card), KindSummary(service_id=item.service_id, card=card)
        )
        monday = _monday(item.outcome_timestamp)
        counts = weeks.setdefault(monday, [0, 0])
        if item.outcome == "accepted":
            summary.accepted += 1
            counts[0] += 1
            for suggestion in item.accepted_suggestions:
                summary.suggestions[names.suggestion(suggestion)] += 1
        else:
            summary.overridden += 1
            counts[1] += 1
            summary.reasons[_reason(item, names)] += 1
    return Report(
        kinds=[kinds[key] for key in sorted(kinds)],
        weeks=[Week(monday, a, o) for monday, (a, o) in sorted(weeks.items())],
    )


def _monday(timestamp: str) -> date:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00")).astimezone(UTC)
    return moment.date() - timedelta(days=moment.weekday())


def _reason(item: StoredItem, names: Names) -> str:
    if not item.override_code:
        return "(no reason given)"
    return names.reasons.get(
        (item.override_system or "", item.override_code), f"{item.override_code} (not in content)"
    )


def percent(rate: float) -> str:
    return f"{rate * 100:.0f} %"


def render_text(report: Report) -> str:
    """The terminal report: one block per service and card kind."""
    if not report.kinds:
        return "no feedback yet\n"
    lines = [f"{report.cards} card(s) with feedback (each card counted once: its latest outcome)"]
    for kind in report.kinds:
        lines += [
            "",
            f"{kind.service_id} · {kind.card}",
            f"  cards {kind.cards}  accepted {kind.accepted} ({percent(kind.acceptance_rate)})"
            f"  overridden {kind.overridden} ({percent(kind.override_rate)})",
        ]
        lines += _counted("suggestion accepted", kind.suggestions.most_common())
        lines += _counted("override reason", kind.reasons.most_common())
    if report.weeks:
        lines += ["", "acceptance by week (Monday, UTC)"]
        lines += [
            f"  {week.monday.isoformat()}  {percent(week.acceptance_rate):>5}"
            f"  ({week.accepted} of {week.accepted + week.overridden})"
            for week in report.weeks
        ]
    return "\n".join(lines) + "\n"


def _counted(what: str, pairs: Sequence[tuple[str, int]]) -> list[str]:
    return [f"  {what}: {name} × {count}" for name, count in pairs]
