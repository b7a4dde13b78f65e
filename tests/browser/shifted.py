"""Fixture patients moved to today: every date and dateTime shifted by whole days.

A fixture is written at its own ``evalTime``; the browser test runs the real clock, so each
date-like string in the resources moves by (today - evalTime's date). Intervals, ages within a
day or two and the order of events stay as written.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+(Z|[+-]\d{2}:\d{2})?)?$")


def shift_days(evaluated: str, today: date | None = None) -> int:
    when = datetime.fromisoformat(evaluated.replace("Z", "+00:00")).date()
    return ((today or datetime.now(UTC).date()) - when).days


def shifted(value: Any, days: int) -> Any:
    """``value`` with every ISO date/dateTime string moved by ``days`` days."""
    if isinstance(value, dict):
        return {k: shifted(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shifted(v, days) for v in value]
    if isinstance(value, str) and _DATE.match(value):
        if len(value) == 10:
            return (date.fromisoformat(value) + timedelta(days=days)).isoformat()
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")) + timedelta(days=days)
        text = moment.isoformat()
        return text.replace("+00:00", "Z") if value.endswith("Z") else text
    return value


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
    unique = {(r["resourceType"], r["id"]): shifted(r, days) for r in found}
    return list(unique.values())
