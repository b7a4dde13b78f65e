"""FHIR date/dateTime values as UTC intervals (R4: a date-only value is the whole day)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

Interval = tuple[datetime, datetime]


def parse_interval(value: object) -> Interval | None:
    """``(lo, hi)`` for a FHIR ``date`` / ``dateTime``; None when absent or malformed.

    A value with a time is an instant (lo == hi). ``YYYY``, ``YYYY-MM`` and ``YYYY-MM-DD`` cover
    the whole year, month or day (UTC): lo is its start, hi the start of the next one.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            year = int(text)
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:])
            lo = datetime(year, month, 1, tzinfo=UTC)
            hi = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
            return lo, hi
        if len(text) == 10:
            day = date.fromisoformat(text)
            lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return lo, lo + timedelta(days=1)
        if len(text) < 16 or text[10] != "T":
            return None
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    instant = instant.astimezone(UTC)
    return instant, instant


def parse_instant(value: object) -> datetime | None:
    """The earliest instant of a FHIR date/dateTime (start of the day for a date)."""
    interval = parse_interval(value)
    return interval[0] if interval else None


def period_interval(period: object) -> tuple[datetime | None, datetime | None] | None:
    """``(start, end)`` of a FHIR Period (either may be None); None when there is neither."""
    if not isinstance(period, dict):
        return None
    start = parse_interval(period.get("start"))
    end = parse_interval(period.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start else None), (end[1] if end else None)


def fhir_datetime(moment: datetime) -> str:
    """A FHIR dateTime in UTC with seconds ("2025-06-13T10:00:00Z")."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fhir_date(moment: datetime | date) -> str:
    return moment.strftime("%Y-%m-%d")
