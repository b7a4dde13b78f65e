"""The feedback report as one self-contained HTML page: inline CSS and SVG, no script, no CDN."""

from __future__ import annotations

from datetime import datetime
from html import escape

from cds_service.feedback_report import Report, Week, percent

_CSS = """
body{font:16px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;
color:#1b1b1b;background:#fff}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;width:100%}
th,td{border:1px solid #8a8a8a;padding:.3rem .5rem;text-align:left}
th{background:#eef1f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#4a4a4a}
svg text{font:12px system-ui,sans-serif;fill:#1b1b1b}
"""


def render_html(report: Report, *, version: str, generated: datetime) -> str:
    """The whole page; every text from the database or content is escaped."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>footdrop-cds feedback report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>footdrop-cds feedback report</h1>",
        f'<p class="meta">Generated {escape(generated.isoformat(timespec="minutes"))} by '
        f"footdrop-cds {escape(version)}. {report.cards} card(s) with feedback; each card is "
        "counted once, by its latest outcome.</p>",
    ]
    if not report.kinds:
        parts.append("<p>No feedback yet.</p>")
    else:
        parts.append("<h2>Acceptance over time</h2>")
        parts.append(_chart(report.weeks))
        parts.append(_weeks_table(report.weeks))
        parts.append("<h2>Cards</h2>")
        parts.append(_kinds_table(report))
        for kind in report.kinds:
            parts.append(f"<h3>{escape(kind.service_id)}: {escape(kind.card)}</h3>")
            parts.append(
                _pairs_table("Suggestion accepted", "Times chosen", kind.suggestions.most_common())
            )
            parts.append(_pairs_table("Override reason", "Cards", kind.reasons.most_common()))
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _kinds_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{escape(k.service_id)}</td><td>{escape(k.card)}</td>"
        f'<td class="n">{k.cards}</td><td class="n">{k.accepted} ({percent(k.acceptance_rate)})'
        f'</td><td class="n">{k.overridden} ({percent(k.override_rate)})</td></tr>'
        for k in report.kinds
    )
    return (
        "<table><caption>Acceptance and override by service and card kind</caption>"
        '<thead><tr><th scope="col">Service</th><th scope="col">Card</th>'
        '<th scope="col">Cards</th><th scope="col">Accepted</th>'
        f'<th scope="col">Overridden</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def _pairs_table(what: str, unit: str, pairs: list[tuple[str, int]]) -> str:
    if not pairs:
        return f"<p>{escape(what)}: none.</p>"
    rows = "".join(
        f'<tr><td>{escape(name)}</td><td class="n">{count}</td></tr>' for name, count in pairs
    )
    return (
        f'<table><thead><tr><th scope="col">{escape(what)}</th><th scope="col">{escape(unit)}'
        f"</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _weeks_table(weeks: list[Week]) -> str:
    rows = "".join(
        f'<tr><td>{w.monday.isoformat()}</td><td class="n">{percent(w.acceptance_rate)}</td>'
        f'<td class="n">{w.accepted}</td><td class="n">{w.overridden}</td></tr>'
        for w in weeks
    )
    return (
        "<table><caption>Acceptance by week (weeks start on Monday, UTC)</caption>"
        '<thead><tr><th scope="col">Week of</th><th scope="col">Acceptance</th>'
        '<th scope="col">Accepted</th><th scope="col">Overridden</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>"
    )


def _chart(weeks: list[Week]) -> str:
    """A bar per week, its height the acceptance rate; the table below has the same numbers."""
    width, height, left, bottom, top = 720, 240, 44, 40, 12
    plot_h = height - bottom - top
    step = (width - left - 8) / max(1, len(weeks))
    bar = max(4.0, min(48.0, step * 0.7))
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Acceptance rate by week</title>',
        f'<desc id="chart-desc">{len(weeks)} week(s); the table below lists each value.</desc>',
    ]
    for level in (0, 50, 100):
        y = top + plot_h * (1 - level / 100)
        out.append(
            f'<line x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c4c4c4"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{level} %</text>'
        )
    for index, week in enumerate(weeks):
        x = left + step * index + (step - bar) / 2
        h = plot_h * week.acceptance_rate
        y = top + plot_h - h
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="#1f5f99">'
            f"<title>{week.monday.isoformat()}: {percent(week.acceptance_rate)}</title></rect>"
        )
        if len(weeks) <= 16 or index % max(1, len(weeks) // 12) == 0:
            out.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                f"{week.monday.strftime('%d %b')}</text>"
            )
    out.append("</svg>")
    return "".join(out)
