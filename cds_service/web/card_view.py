"""CDS Hooks cards as the development page shows them: what the CDS Hooks sandbox renders.

Indicator, summary, source, Markdown detail, suggestions, links and override reasons, read
defensively from the response JSON (a card is data from the service, but the page must never
fail on a field it did not expect). Markdown is rendered with raw HTML
off and unsafe link schemes refused (``cds_service.markdown_html``), as an EHR should.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from cds_service.markdown_html import render_markdown

INDICATORS = ("info", "warning", "critical", "success")


@dataclass(frozen=True)
class ActionView:
    type: str
    description: str
    resource_type: str


@dataclass(frozen=True)
class SuggestionView:
    label: str
    recommended: bool
    actions: tuple[ActionView, ...]


@dataclass(frozen=True)
class LinkView:
    label: str
    url: str | None  # None when not an http(s) URL: shown as text, never as a link
    type: str


@dataclass(frozen=True)
class CardView:
    indicator: str
    summary: str
    detail_html: Markup
    source_label: str
    source_url: str | None
    suggestions: tuple[SuggestionView, ...]
    selection_behavior: str
    links: tuple[LinkView, ...]
    override_reasons: tuple[str, ...]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _http_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def card_view(card: dict[str, Any]) -> CardView:
    """One card of a hook response, ready for the template."""
    indicator = _text(card.get("indicator"))
    raw_source = card.get("source")
    source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
    suggestions = tuple(
        SuggestionView(
            label=_text(s.get("label")),
            recommended=s.get("isRecommended") is True,
            actions=tuple(
                ActionView(
                    type=_text(a.get("type")),
                    description=_text(a.get("description")),
                    resource_type=_text((a.get("resource") or {}).get("resourceType"))
                    if isinstance(a.get("resource"), dict)
                    else "",
                )
                for a in _dicts(s.get("actions"))
            ),
        )
        for s in _dicts(card.get("suggestions"))
    )
    links = tuple(
        LinkView(
            label=_text(x.get("label")), url=_http_url(x.get("url")), type=_text(x.get("type"))
        )
        for x in _dicts(card.get("links"))
    )
    reasons = tuple(
        _text(r.get("display")) or _text(r.get("code")) for r in _dicts(card.get("overrideReasons"))
    )
    return CardView(
        indicator=indicator if indicator in INDICATORS else "info",
        summary=_text(card.get("summary")),
        detail_html=render_markdown(_text(card.get("detail"))),
        source_label=_text(source.get("label")),
        source_url=_http_url(source.get("url")),
        suggestions=suggestions,
        selection_behavior=_text(card.get("selectionBehavior")),
        links=links,
        override_reasons=reasons,
    )


def response_cards(body: Any) -> list[CardView]:
    """Every card of a hook response body (none when the body is not a card list)."""
    cards = body.get("cards") if isinstance(body, dict) else None
    return [card_view(card) for card in _dicts(cards)]


def pretty_json(value: Any) -> str:
    """Indented JSON for the request and response panes (escaped by the template)."""
    return json.dumps(value, indent=2, ensure_ascii=False)
