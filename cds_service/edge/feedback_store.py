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

    def report(self) -> list[ReportRow]:
        """Counts per service, per card within a service, and per accepted suggestion."""
        accepted = func.sum(func.cast(feedback_table.c.outcome == "accepted", Integer))
        overridden = func.sum(func.cast(feedback_table.c.outcome == "overridden", Integer))
        rows: list[ReportRow] = []
        try:
            with self._engine.connect() as connection:
                per_service = connection.execute(
                    select(feedback_table.c.service_id, accepted, overridden)
                    .group_by(feedback_table.c.service_id)
                    .order_by(feedback_table.c.service_id)
                )
                rows += [
                    ReportRow(s, None, None, int(a or 0), int(o or 0)) for s, a, o in per_service
                ]
                per_card = connection.execute(
                    select(
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        accepted,
                        overridden,
                    )
                    .group_by(feedback_table.c.service_id, feedback_table.c.card_uuid)
                    .order_by(feedback_table.c.service_id, feedback_table.c.card_uuid)
                )
                rows += [ReportRow(s, c, None, int(a or 0), int(o or 0)) for s, c, a, o in per_card]
                per_suggestion = connection.execute(
                    select(
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        accepted_suggestion_table.c.suggestion_uuid,
                        func.count(),
                    )
                    .join(accepted_suggestion_table)
                    .group_by(
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        accepted_suggestion_table.c.suggestion_uuid,
                    )
                    .order_by(
                        feedback_table.c.service_id,
                        feedback_table.c.card_uuid,
                        accepted_suggestion_table.c.suggestion_uuid,
                    )
                )
                rows += [ReportRow(s, c, g, int(n), 0) for s, c, g, n in per_suggestion]
        except SQLAlchemyError as error:
            raise StoreUnavailableError("database unreachable") from error
        return rows


def _row(service_id: str, item: Mapping[str, Any], received_at: datetime) -> dict[str, Any]:
    reason = (item.get("overrideReason") or {}).get("reason") or {}
    comment = (item.get("overrideReason") or {}).get("userComment")
    return {
        "fingerprint": fingerprint(service_id, item),
        "service_id": service_id,
        "card_uuid": item["card"],
        "outcome": item["outcome"],
        "override_system": reason.get("system"),
        "override_code": reason.get("code"),
        "override_has_comment": bool(comment),
        "outcome_timestamp": item["outcomeTimestamp"],
        "received_at": received_at,
    }


def fingerprint(service_id: str, item: Mapping[str, Any]) -> str:
    """A stable digest of one feedback item: the same item sent twice is stored once."""
    canonical = json.dumps([service_id, item], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
