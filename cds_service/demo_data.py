"""Bundled demo patients with their dates moved to today.

The fixtures are pinned to 2025: loaded as they are, a foot drop that began "two days ago" is a year
old and the card offers a tendon transfer. Every date of a demo is therefore shifted by the same
whole number of days, the one that brings the fixture's ``evalTime`` nearest to ``now``: intervals
between events are unchanged, so the card is the one the fixture expects, only dated today.

Used by the development page's card preview, ``cds-service demo-data`` (a FHIR transaction Bundle
for an open R4 server, e.g. behind the CDS Hooks sandbox) and anything else that needs a realistic
patient today. Pure: ``now`` is passed in; the only I/O is reading the package's own data files.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib.resources import files
from typing import Any

from cds_service.domain.prefetch import flatten

DEMO_DIR = files("cds_service").joinpath("examples", "demo")
DAY = timedelta(days=1)

#: ``YYYY-MM-DD`` with an optional FHIR time (``Thh:mm:ss[.fff]`` and ``Z`` or ``±hh:mm``), or a
#: partial date ``YYYY-MM``. A bare year is left alone: it cannot be told from a code or a number.
_DATE_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?P<time>T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)
_YEAR_MONTH = re.compile(r"(?P<year>\d{4})-(?P<month>\d{2})")


@dataclass(frozen=True)
class DemoSpec:
    """One bundled demo: its file under ``examples/demo/`` and how the page presents it."""

    slug: str
    title: str
    kind: str  # "positive", "negative", "red flag" or "prevention"
    service_id: str


#: The demos, in the order the page lists them.
DEMOS: tuple[DemoSpec, ...] = (
    DemoSpec(
        "foot-drop-after-gluteal-injection",
        "Foot drop after a dorsogluteal IM injection",
        "positive",
        "footdrop-im-injection",
    ),
    DemoSpec(
        "no-card-deltoid-injection",
        "Deltoid vaccine only: no card",
        "negative",
        "footdrop-im-injection",
    ),
    DemoSpec(
        "red-flag-bilateral-foot-drop",
        "Bilateral foot drop: red flag",
        "red flag",
        "footdrop-im-injection",
    ),
    DemoSpec(
        "order-select-dorsogluteal",
        "Order select: IM diclofenac into the buttock",
        "prevention",
        "im-injection-site-select",
    ),
    DemoSpec(
        "order-sign-dorsogluteal",
        "Order sign: IM diclofenac into the buttock",
        "prevention",
        "im-injection-site-sign",
    ),
    DemoSpec(
        "order-sign-hepb-vaccine-buttock",
        "Order sign: hepatitis B vaccine into the buttock",
        "prevention",
        "im-injection-site-sign",
    ),
)


@dataclass(frozen=True)
class DemoPatient:
    """A demo with its dates shifted: the plain CDS Hooks request to send, and what to expect.

    ``request`` carries a complete prefetch and no ``fhirServer``, so it runs anywhere;
    ``expected`` is the fixture's expected outcome, its dates shifted too.
    """

    slug: str
    title: str
    kind: str
    service_id: str
    description: str
    hook: str
    patient_id: str
    eval_time: datetime
    shift: timedelta
    request: dict[str, Any]
    expected: dict[str, Any]

    def resources(self) -> list[dict[str, Any]]:
        """Every resource the request prefetches (what a FHIR server should hold for it)."""
        found: list[dict[str, Any]] = []
        for value in self.request.get("prefetch", {}).values():
            found.extend(flatten(value))
        return found


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with a zone (``Z`` accepted); ValueError otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


def day_shift(eval_time: datetime, now: datetime) -> timedelta:
    """The whole number of days that brings ``eval_time`` nearest to ``now``.

    Whole days keep every time of day and every date-only value a date; the evaluation moment
    moves by at most twelve hours against the fixture's.
    """
    return DAY * round((now - eval_time) / DAY)


def shift_dates(value: Any, delta: timedelta) -> Any:
    """A deep copy of ``value``, every FHIR date, dateTime and instant moved by ``delta``.

    ``delta`` must be whole days. Offsets, precision (date, minutes, seconds, fractions) and the
    time of day are kept; a ``YYYY-MM`` partial date becomes the month its middle moves into; a
    bare year and every string that is not a date (codes, ids, URLs, text) are left untouched.
    """
    if delta % DAY:
        raise ValueError("shift_dates moves by whole days only")
    return _shift(value, delta.days)


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, str):
        return _shift_text(value, days)
    if isinstance(value, Mapping):
        return {key: _shift(item, days) for key, item in value.items()}
    if isinstance(value, list):
        return [_shift(item, days) for item in value]
    return copy.deepcopy(value)


def _shift_text(text: str, days: int) -> str:
    found = _DATE_TIME.fullmatch(text)
    if found:
        try:
            moved = date.fromisoformat(found["date"]) + timedelta(days=days)
        except ValueError:  # not a real calendar date: not ours to change
            return text
        return moved.isoformat() + (found["time"] or "")
    found = _YEAR_MONTH.fullmatch(text)
    if found and 1 <= int(found["month"]) <= 12:
        middle = date(int(found["year"]), int(found["month"]), 15) + timedelta(days=days)
        return f"{middle.year:04d}-{middle.month:02d}"
    return text


def load_demo_fixture(slug: str) -> dict[str, Any]:
    """The bundled fixture document of a demo (``evalTime``, ``expected``, ``request``)."""
    document: dict[str, Any] = json.loads(DEMO_DIR.joinpath(f"{slug}.json").read_bytes())
    return document


def demo_patient(spec: DemoSpec, now: datetime) -> DemoPatient:
    """One demo, its dates shifted so that its evaluation time falls on ``now``'s day."""
    document = load_demo_fixture(spec.slug)
    eval_time = parse_instant(document["evalTime"])
    delta = day_shift(eval_time, now)
    request = {
        key: value
        for key, value in shift_dates(document["request"], delta).items()
        if key not in {"fhirServer", "fhirAuthorization"}
    }
    return DemoPatient(
        slug=spec.slug,
        title=spec.title,
        kind=spec.kind,
        service_id=spec.service_id,
        description=document.get("description", ""),
        hook=request["hook"],
        patient_id=request["context"]["patientId"],
        eval_time=eval_time + delta,
        shift=delta,
        request=request,
        expected=shift_dates(document.get("expected", {}), delta),
    )


def demo_requests(now: datetime) -> list[DemoPatient]:
    """Every bundled demo, dated for ``now`` (an aware datetime), in the page's order."""
    if now.tzinfo is None:
        raise ValueError("now needs a time zone")
    return [demo_patient(spec, now) for spec in DEMOS]


def find_demo(slug: str, now: datetime) -> DemoPatient | None:
    """The demo called ``slug``, dated for ``now``; None for an unknown name."""
    spec = next((s for s in DEMOS if s.slug == slug), None)
    return None if spec is None else demo_patient(spec, now)


def demo_bundle(now: datetime) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle of every demo patient's resources, dated for ``now``.

    Each entry is a ``PUT Type/id``, so loading it twice leaves one copy of each resource (the
    resources keep the fixtures' ids, which the request's ``patientId`` names). Draft orders are not
    included: they live in the hook's context, not on the server.
    """
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for demo in demo_requests(now):
        for resource in demo.resources():
            if not resource.get("id"):
                continue
            key = (str(resource.get("resourceType")), str(resource.get("id")))
            entries.setdefault(
                key, {"resource": resource, "request": {"method": "PUT", "url": "/".join(key)}}
            )
    ordered = sorted(entries.values(), key=lambda e: e["resource"]["resourceType"] != "Patient")
    return {"resourceType": "Bundle", "type": "transaction", "entry": ordered}
