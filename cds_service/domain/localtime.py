"""R0a (clinical.md §4.3): which zone a date-only value is read in, and the site's "today".

A date-only value compared with a dateTime is the whole day in *that dateTime's* offset. The
engine compares date-only onsets, abatements and order dates with the evaluated injection, so a
request is read in one *day zone*: the offset of its latest injection that carries one (the
evaluated injection in all but multi-offset records, where offsets differ by a DST hour at most),
else the site time zone (setting ``CDS_SITE_TIMEZONE``, IANA, default UTC). A dateTime without an
offset is wall-clock time in the site time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cds_service.domain.fhirtime import has_offset, parse_interval

__all__ = ["day_zone", "site_zone"]

_INJECTION_TIMES = {
    "Procedure": ("performedDateTime", ("performedPeriod", "start")),
    "MedicationAdministration": ("effectiveDateTime", ("effectivePeriod", "start")),
    "Immunization": ("occurrenceDateTime", None),
}


@cache
def site_zone(name: str) -> tzinfo:
    """The IANA zone ``name`` ("UTC" and "" give UTC); ValueError for an unknown name."""
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown IANA time zone {name!r}") from error


def _injection_time(resource: Mapping[str, object]) -> object:
    keys = _INJECTION_TIMES.get(str(resource.get("resourceType")))
    if keys is None:
        return None
    direct, period = keys
    if direct in resource:
        return resource.get(direct)
    if period is not None:
        value = resource.get(period[0])
        if isinstance(value, Mapping):
            return value.get(period[1])
    return None


def day_zone(resources: Iterable[object], site: tzinfo) -> tzinfo:
    """The offset of the latest injection-type resource with an explicit offset, else ``site``.

    Cheap on large prefetches: UTC-written times ("Z") are compared as strings and only the
    latest one is parsed; other offsets are parsed.
    """
    latest: datetime | None = None
    latest_utc = ""
    for resource in resources:
        if not isinstance(resource, Mapping):
            continue
        value = _injection_time(resource)
        if not isinstance(value, str) or not has_offset(value):
            continue
        if value.endswith("Z"):
            latest_utc = max(latest_utc, value)
            continue
        parsed = parse_interval(value)
        if parsed is not None and (latest is None or parsed[0] > latest):
            latest = parsed[0]
    if latest_utc:
        parsed = parse_interval(latest_utc)
        if parsed is not None and (latest is None or parsed[0] > latest):
            latest = parsed[0]
    if latest is None or latest.tzinfo is None:
        return site
    return latest.tzinfo
