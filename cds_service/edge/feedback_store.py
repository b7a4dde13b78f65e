"""Feedback store: what clinicians did with our cards, durable and free of PHI.

Each CDS Hooks feedback item is stored once (a fingerprint of its content makes re-sent batches
idempotent). Free-text override comments may hold PHI, so only their presence is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from cds_service.edge.database import StoreUnavailableError

metadata = MetaData()

feedback_table = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("service_id", String(128), nullable=False, index=True),
    Column("card_uuid", String(128), nullable=False, index=True),
    Column("outcome", String(16), nullable=False),
    Column("override_system", String(512)),
    Column("override_code", String(256)),
    Column("override_has_comment", Boolean, nullable=False, default=False),
    Column("outcome_timestamp", String(40), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

accepted_suggestion_table = Table(
    "feedback_accepted_suggestion",
    metadata,
    Column("feedback_id", ForeignKey("feedback.id", ondelete="CASCADE"), primary_key=True),
    Column("suggestion_uuid", String(128), primary_key=True),
)


@dataclass(frozen=True)
class RecordResult:
    """How many items were new and how many were already stored."""

    stored: int
    duplicates: int


@dataclass(frozen=True)
class ReportRow:
    """Acceptance and override counts for one service, card, or suggestion."""

    service_id: str
    card_uuid: str | None
    suggestion_uuid: str | None
    accepted: int
    overridden: int


@dataclass(frozen=True)
class StoredItem:
    """One card's latest feedback: what the feedback report reads (uuids, codes, no PHI)."""

    service_id: str
    card_uuid: str
    outcome: str
    outcome_timestamp: str
    override_system: str | None
    override_code: str | None
    accepted_suggestions: tuple[str, ...]


class FeedbackStore:
    """SQLAlchemy-backed feedback store; one transaction per batch, committed before 200."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    def create_schema(self) -> None:
        """Create the tables if missing (idempotent; safe from several workers at once)."""
        try:
            metadata.create_all(self._engine)
        except SQLAlchemyError as error:
            if not self._tables_exist():
                raise StoreUnavailableError("cannot create feedback tables") from error

    def _tables_exist(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(select(func.count()).select_from(feedback_table))
            return True
        except SQLAlchemyError:
            return False

    def dispose(self) -> None:
        """Close pooled connections (shutdown, or after the database was moved or restarted)."""
        self._engine.dispose()

    def ping(self) -> None:
        """Raise StoreUnavailableError unless the database answers a trivial query."""
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as error:
            raise StoreUnavailableError("database unreachable") from error

    def record(self, service_id: str, items: Sequence[Mapping[str, Any]]) -> RecordResult:
        """Store schema-valid items atomically; already-stored items count as duplicates."""
        received_at = datetime.now(UTC)
        stored = 0
        try:
            with self._engine.begin() as connection:
                for item in items:
                    row = _row(service_id, item, received_at)
                    inserted = connection.execute(self._insert_ignoring_duplicates(row))
                    new_id = inserted.scalar_one_or_none()
                    if new_id is None:
                        continue
                    stored += 1
                    suggestion_ids = sorted(
                        {s["id"] for s in item.get("acceptedSuggestions", ()) if "id" in s}
                    )
                    if suggestion_ids:
                        connection.execute(
                            accepted_suggestion_table.insert(),
                            [{"feedback_id": new_id, "suggestion_uuid": s} for s in suggestion_ids],
                        )
        except SQLAlchemyError as error:
            raise StoreUnavailableError("feedback not stored") from error
        return RecordResult(stored=stored, duplicates=len(items) - stored)

    def _insert_ignoring_duplicates(self, row: dict[str, Any]) -> Any:
        dialect = postgresql if self._dialect == "postgresql" else sqlite
        return (
            dialect.insert(feedback_table)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["fingerprint"])
            .returning(feedback_table.c.id)
        )

    def count(self) -> int:
        """Number of stored feedback items (for tests and the report header)."""
        try:
            with self._engine.connect() as connection:
                return connection.execute(
                    select(func.count()).select_from(feedback_table)
                ).scalar_one()
        except SQLAlchemyError as error:
            raise StoreUnavailableError("database unreachable") from error

    def latest_items(self) -> list[StoredItem]:
        """Every card's latest outcome (as :meth:`report` counts them), with its details."""
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(
                    select(
                        feedback_table.c.id,
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        feedback_table.c.outcome,
                        feedback_table.c.outcome_timestamp,
                        feedback_table.c.override_system,
                        feedback_table.c.override_code,
                    )
                ).all()
                latest: dict[tuple[str, str], Any] = {}
                for row in rows:
                    key = (row.service_id, row.card_uuid)
                    held = latest.get(key)
                    if held is None or (row.outcome_timestamp, row.id) > (
                        held.outcome_timestamp,
                        held.id,
                    ):
                        latest[key] = row
                chosen: dict[int, list[str]] = {row.id: [] for row in latest.values()}
                if chosen:
                    for feedback_id, suggestion in connection.execute(
                        select(
                            accepted_suggestion_table.c.feedback_id,
                            accepted_suggestion_table.c.suggestion_uuid,
                        ).where(accepted_suggestion_table.c.feedback_id.in_(list(chosen)))
                    ):
                        chosen[feedback_id].append(suggestion)
        except SQLAlchemyError as error:
            raise StoreUnavailableError("database unreachable") from error
        return [
            StoredItem(
                service_id=row.service_id,
                card_uuid=row.card_uuid,
                outcome=row.outcome,
                outcome_timestamp=row.outcome_timestamp,
                override_system=row.override_system,
                override_code=row.override_code,
                accepted_suggestions=tuple(sorted(chosen[row.id])),
            )
            for row in sorted(latest.values(), key=lambda r: (r.outcome_timestamp, r.id))
        ]

    def report(self) -> list[ReportRow]:
        """Counts per service, per card within a service, and per accepted suggestion.

        Every item is kept as sent (an audit trail), but a card counts once: by its latest
        outcome (``outcomeTimestamp``, then arrival). A clinician who overrode a card and later
        accepted it has accepted it.
        """
        try:
            with self._engine.connect() as connection:
                items = connection.execute(
                    select(
                        feedback_table.c.id,
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        feedback_table.c.outcome,
                        feedback_table.c.outcome_timestamp,
                    )
                ).all()
                latest: dict[tuple[str, str], tuple[str, int, str]] = {}
                for item_id, service, card, outcome, stamp in items:
                    key = (service, card)
                    if key not in latest or (stamp, item_id) > latest[key][:2]:
                        latest[key] = (stamp, item_id, outcome)
                kept = [item_id for _, item_id, _ in latest.values()]
                suggestions = connection.execute(
                    select(
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        accepted_suggestion_table.c.suggestion_uuid,
                    )
                    .join(accepted_suggestion_table)
                    .where(feedback_table.c.id.in_(kept))
                ).all()
        except SQLAlchemyError as error:
            raise StoreUnavailableError("database unreachable") from error
        per_service: dict[str, list[int]] = {}
        per_card: dict[tuple[str, str], list[int]] = {}
        for (service, card), (_, _, outcome) in latest.items():
            column = 0 if outcome == "accepted" else 1
            per_service.setdefault(service, [0, 0])[column] += 1
            per_card.setdefault((service, card), [0, 0])[column] += 1
        per_suggestion: dict[tuple[str, str, str], int] = {}
        for service, card, suggestion in suggestions:
            per_suggestion[service, card, suggestion] = (
                per_suggestion.get((service, card, suggestion), 0) + 1
            )
        rows = [ReportRow(s, None, None, a, o) for s, (a, o) in sorted(per_service.items())]
        rows += [ReportRow(s, c, None, a, o) for (s, c), (a, o) in sorted(per_card.items())]
        rows += [ReportRow(s, c, g, n, 0) for (s, c, g), n in sorted(per_suggestion.items())]
        return rows


def _row(service_id: str, item: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    item = normalise(item)
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    has_comment = bool((item.get("overrideReason") or {}).get("hasComment"))
    return {
        "fingerprint": fingerprint(service_id, item),
        "service_id": service_id,
        "card_uuid": item["card"],
        "outcome": item["outcome"],
        "override_system": reason.get("system"),
        "override_code": reason.get("code"),
        "override_has_comment": has_comment,
        "outcome_timestamp": item["outcomeTimestamp"],
        "received_at": received_at,
    }


def normalise(item: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the store keeps, one spelling per meaning, so a re-sent item is recognised.

    The timestamp becomes UTC with microseconds and ``Z`` (``Z``, ``+00:00`` and ``+02:00`` for the
    same instant are one item); accepted suggestions are sorted and de-duplicated; a comment is
    reduced to its presence (its text, possibly PHI, is never stored). Anything else the client
    sent (extensions, however deeply nested) is not kept, so it cannot change the fingerprint.
    """
    moment = datetime.fromisoformat(str(item["outcomeTimestamp"]).upper().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    result: dict[str, Any] = {
        "card": item["card"],
        "outcome": item["outcome"],
        "outcomeTimestamp": moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    suggestions = item.get("acceptedSuggestions")
    if isinstance(suggestions, list):
        ids = sorted({s["id"] for s in suggestions if isinstance(s, Mapping) and "id" in s})
        result["acceptedSuggestions"] = [{"id": i} for i in ids]
    override = item.get("overrideReason")
    if isinstance(override, Mapping):
        reason = override.get("reason")
        reason = reason if isinstance(reason, Mapping) else {}
        result["overrideReason"] = {
            "reason": {k: reason[k] for k in ("system", "code") if isinstance(reason.get(k), str)},
            "hasComment": bool(override.get("userComment")),
        }
    return result


def fingerprint(service_id: str, item: Mapping[str, Any]) -> str:
    """A stable digest of one (normalised) feedback item: sent twice, it is stored once."""
    canonical = json.dumps([service_id, item], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
