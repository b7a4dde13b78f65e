"""R0a (clinical.md §4.3): which zone a date-only value is read in, and the site's "today".

A date-only value compared with a dateTime is the whole day in *that dateTime's* offset. The
engine compares date-only onsets, abatements and order dates with the evaluated injection, so a
request is read in one *day zone*: the offset of the patient's latest IM injection that carries
one (the evaluated injection in all but multi-offset records, where offsets differ by a DST hour
at most), else the site time zone (setting ``CDS_SITE_TIMEZONE``, IANA, default UTC). A dateTime
without an offset is wall-clock time in the site time zone. The facts are read in the site zone
first and read again in the injection's zone only when it differs and a date-only value was seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timezone, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["injection_zone", "site_zone"]


def injection_zone(times: Iterable[tuple[datetime, bool]], site: tzinfo) -> tzinfo:
    """The zone date-only values are read in: the offset of the latest injection whose time
    carries one (``(time, day_only)`` pairs of the patient's IM injections), else ``site``."""
    latest: datetime | None = None
    for moment, day_only in times:
        if day_only or moment.tzinfo is None:
            continue
        if latest is None or moment > latest:
            latest = moment
    if latest is None:
        return site
    offset = latest.utcoffset()
    if offset is None or offset == site.utcoffset(latest):
        return site
    return timezone(offset)


@cache
def site_zone(name: str) -> tzinfo:
    """The IANA zone ``name`` ("UTC" and "" give UTC); ValueError for an unknown name."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown IANA time zone {name!r}") from error
