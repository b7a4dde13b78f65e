"""Fixture patients moved to today: every date and dateTime shifted by whole days.

A fixture is written at its own ``evalTime``; the browser test runs the real clock, so each
date-like string in the resources moves by (today - evalTime's date). Intervals, ages within a
day or two and the order of events stay as written.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.demo_data import shift_dates


def shift_days(evaluated: str, today: date | None = None) -> int:
    when = datetime.fromisoformat(evaluated.replace("Z", "+00:00")).date()
    return ((today or datetime.now(UTC).date()) - when).days


def fixture_resources(fixture: dict[str, Any], days: int) -> list[dict[str, Any]]:
    """Every resource of the fixture's prefetch (Bundles flattened), dates shifted."""
    found: list[dict[str, Any]] = []
    for item in (fixture["request"].get("prefetch") or {}).values():
        if not isinstance(item, dict):
            continue
        if item.get("resourceType") == "Bundle":
            found += [e["resource"] for e in item.get("entry") or () if "resource" in e]
        else:
            found.append(item)
    unique = {(r["resourceType"], r["id"]): shift_dates(r, timedelta(days=days)) for r in found}
    return list(unique.values())
