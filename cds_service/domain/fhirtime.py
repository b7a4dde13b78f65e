"""FHIR date/dateTime values as intervals, in local time (clinical.md §4.3 R0a).

A dateTime with an offset keeps that offset (its local date is the date as written, never the UTC
date); a date-only value is the whole day in a *day zone* (the offset of the injection it is
compared with, see :mod:`localtime`); a dateTime without an offset (invalid in FHIR R4, common in
exports) is wall-clock time in the site time zone. Aware datetimes compare by instant, so mixing
offsets is safe; ``.date()`` of a value gives its local date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo

Interval = tuple[datetime, datetime]


def _start(year: int, month: int, day: int, zone: tzinfo) -> datetime:
    return datetime(year, month, day, tzinfo=zone)


def parse_interval(
    value: object, day_zone: tzinfo = UTC, site_zone: tzinfo | None = None
) -> Interval | None:
    """``(lo, hi)`` for a FHIR ``date`` / ``dateTime``; None when absent or malformed.

    A value with a time is an instant (lo == hi) in its own offset. ``YYYY``, ``YYYY-MM`` and
    ``YYYY-MM-DD`` cover the whole year, month or day in ``day_zone``: lo is its start, hi the
    start of the next one. A time without an offset is read in ``site_zone`` (else ``day_zone``).
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            year = int(text)
            return _start(year, 1, 1, day_zone), _start(year + 1, 1, 1, day_zone)
        if len(text) == 7 and text[4] == "-":
            year, month = int(text[:4]), int(text[5:])
            lo = _start(year, month, 1, day_zone)
            hi = _start(year + month // 12, month % 12 + 1, 1, day_zone)
            return lo, hi
        if len(text) == 10:
            day = date.fromisoformat(text)
            nxt = day + timedelta(days=1)
            return (
                _start(day.year, day.month, day.day, day_zone),
                _start(nxt.year, nxt.month, nxt.day, day_zone),
            )
        if len(text) < 16 or text[10] != "T":
            return None
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=site_zone or day_zone)
    return instant, instant


def has_offset(value: object) -> bool:
    """True for a dateTime string with a time and an explicit offset (or Z)."""
    if not isinstance(value, str) or len(value) < 16 or value[10] != "T":
        return False
    tail = value[16:]
    return "Z" in tail or "+" in tail or "-" in tail


def is_date_only(value: object) -> bool:
    """True for a FHIR date (year, year-month or full date) without a time."""
    return isinstance(value, str) and len(value.strip()) in (4, 7, 10)


def parse_instant(value: object) -> datetime | None:
    """The earliest instant of a FHIR date/dateTime (start of the day for a date)."""
    interval = parse_interval(value)
    return interval[0] if interval else None


def period_interval(
    period: object, day_zone: tzinfo = UTC, site_zone: tzinfo | None = None
) -> tuple[datetime | None, datetime | None] | None:
    """``(start, end)`` of a FHIR Period (either may be None); None when there is neither."""
    if not isinstance(period, dict):
        return None
    start = parse_interval(period.get("start"), day_zone, site_zone)
    end = parse_interval(period.get("end"), day_zone, site_zone)
    if start is None and end is None:
        return None
    return (start[0] if start else None), (end[1] if end else None)


def fhir_datetime(moment: datetime) -> str:
    """A FHIR dateTime in UTC with seconds ("2025-06-13T10:00:00Z")."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fhir_date(moment: datetime | date) -> str:
    return moment.strftime("%Y-%m-%d")


def local_text(moment: datetime) -> str:
    """A displayed local time with its offset: "2025-06-11 19:30 -05:00" or "... 10:00 UTC"."""
    offset = moment.utcoffset()
    if not offset:
        return f"{moment:%Y-%m-%d %H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} {moment.strftime('%z')[:3]}:{moment.strftime('%z')[3:]}"
