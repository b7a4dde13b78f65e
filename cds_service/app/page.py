"""The page's view model: the trace turned into plot geometry and relative dates (pure).

The timeline is server-side SVG: no script, no charting library. Every mark carries data
attributes (``data-kind``, ``data-date``, ...) so tests and assistive tools can read it, and the
same facts are listed in a table as the plot's text alternative.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

__all__ = ["Plot", "build_plot", "relative_day"]

WIDTH = 800
LEFT, RIGHT = 44, 12
MILESTONE_TOP, MILESTONE_ROW = 8, 16
GRADE_TOP, GRADE_HEIGHT = 112, 150
EVENT_TOP = 290
HEIGHT = 340
SIDES = ("left", "right")
DORSIFLEXION = (None, "dorsiflexion", "ankle-dorsiflexion")


def _parse(value: object) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def relative_day(value: object, today: date) -> str:
    """'today', 'in 5 days', '3 days ago' (an empty string for no date)."""
    day = _parse(value)
    if day is None:
        return ""
    delta = (day - today).days
    if delta == 0:
        return "today"
    if delta == 1:
        return "tomorrow"
    if delta == -1:
        return "yesterday"
    return f"in {delta} days" if delta > 0 else f"{-delta} days ago"


@dataclass
class Plot:
    """Everything the SVG template draws, in viewBox units."""

    width: int = WIDTH
    height: int = HEIGHT
    today_x: float = 0.0
    ticks: list[dict[str, Any]] = field(default_factory=list)
    milestones: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)
    grades: list[dict[str, Any]] = field(default_factory=list)
    injections: list[dict[str, Any]] = field(default_factory=list)
    onset: dict[str, Any] | None = None
    orders: list[dict[str, Any]] = field(default_factory=list)
    grade_axis: list[dict[str, Any]] = field(default_factory=list)
    grade_top: int = GRADE_TOP
    grade_bottom: int = GRADE_TOP + GRADE_HEIGHT
    event_top: int = EVENT_TOP
    left: int = LEFT
    right: int = WIDTH - RIGHT


def build_plot(timeline: Mapping[str, Any]) -> Plot:
    """Plot geometry for the trace's ``timeline`` (dates are ISO strings, any may be missing)."""
    today = _parse(timeline.get("today")) or date.today()
    injections = [i for i in timeline.get("injections") or () if _parse(i.get("date"))]
    grades = [g for g in timeline.get("grades") or () if _parse(g.get("date"))]
    orders = [o for o in timeline.get("orders") or () if _parse(o.get("date"))]
    milestones = [m for m in timeline.get("milestones") or () if _parse(m.get("start"))]
    onset = timeline.get("onset") or None
    days = [today]
    days += [_parse(x.get("date")) or today for x in (*injections, *grades, *orders)]
    for m in milestones:
        days += [_parse(m.get("start")) or today, _parse(m.get("end")) or today]
    if onset:
        days += [d for d in (_parse(onset.get("earliest")), _parse(onset.get("latest"))) if d]
    anchor = _parse(timeline.get("anchor"))
    if anchor:
        days.append(anchor)
    first, last = min(days) - timedelta(days=3), max(days) + timedelta(days=7)
    span = max(1, (last - first).days)
    scale = (WIDTH - LEFT - RIGHT) / span

    def x(value: object) -> float:
        day = _parse(value) or today
        return round(LEFT + (day - first).days * scale, 1)

    def y(grade: float) -> float:
        return round(GRADE_TOP + GRADE_HEIGHT * (1 - grade / 5), 1)

    plot = Plot(today_x=x(today.isoformat()))
    plot.grade_axis = [{"grade": g, "y": y(g)} for g in range(6)]
    step = max(7, (span // 6 // 7) * 7 or 7)
    tick = first
    while tick <= last:
        plot.ticks.append({"x": x(tick.isoformat()), "label": tick.strftime("%d %b")})
        tick += timedelta(days=step)
    for row, m in enumerate(milestones):
        start = x(m.get("start"))
        end = x(m.get("end")) if m.get("end") else start + 4
        width = max(4.0, end - start)
        # a label that would run off the right edge is set to the left of its mark
        flip = start + width > WIDTH * 0.6
        plot.milestones.append({**m, "x": start, "w": width,
                                "y": MILESTONE_TOP + row * MILESTONE_ROW,
                                "label_x": start - 3 if flip else start + width + 3,
                                "anchor": "end" if flip else "start"})  # fmt: skip
    dorsiflexion = [g for g in grades if g.get("muscle") in DORSIFLEXION]
    for side in ("left", "right", None):
        points = sorted(
            ({**g, "x": x(g.get("date")), "y": y(_value(g))} for g in dorsiflexion
             if (g.get("side") if g.get("side") in SIDES else None) == side),
            key=lambda p: (p["date"], p["x"]),
        )  # fmt: skip
        if not points:
            continue
        name = side or "unlateralised"
        plot.grades += [{**p, "side_name": name} for p in points]
        if len(points) > 1:
            path = " ".join(f"{p['x']},{p['y']}" for p in points)
            plot.lines.append({"side": name, "points": path})
    plot.injections = [{**i, "x": x(i.get("date"))} for i in injections]
    if onset and (onset.get("earliest") or onset.get("latest")):
        lo = x(onset.get("earliest") or onset.get("latest"))
        hi = x(onset.get("latest") or onset.get("earliest"))
        plot.onset = {**onset, "x": lo, "w": max(3.0, hi - lo)}
    plot.orders = [{**o, "x": x(o.get("date"))} for o in orders]
    return plot


def _value(grade: Mapping[str, Any]) -> float:
    value = grade.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0.0, min(5.0, float(value)))
    text = str(grade.get("grade") or "0")
    return float(text[0]) if text[:1].isdigit() else 0.0
