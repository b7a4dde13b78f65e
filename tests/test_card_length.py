"""R9a over every fixture: short summaries, short details, the SMART link (clinical.md §4.4).

Word rule: whitespace-separated tokens of the detail Markdown. The limit is 50 words for a
critical card and 80 for warning / info, raised by the length of the sentences §4.6.12 requires
(the red-flag action, the R7c sentence with "avoid NSAIDs", the R8c immunogenicity sentence),
which are recognised here from the templates' own wording, not from the engine.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.domain.policy import DEFAULT_POLICY, Policy
from cds_service.domain.prevention import evaluate_prevention
from tests.domain.factories import content
from tests.domain.test_fixture_scenarios import flatten
from tests.fixture_support import (
    PATIENT_VIEW_FIXTURES,
    PREVENTION_FIXTURES,
    explain_fixture,
    load_fixture,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "cards" / "templates"
LIMITS = {"critical": 50, "warning": 80, "info": 80}
IMMUNOGENICITY = "Buttock injection reduces immunogenicity"
R7C = "Avoid NSAIDs"  # the R7c sentence (its template's opening words are too short to match)
LAUNCH = "https://cds.example.org/app/launch"


def _required_starts() -> list[str]:
    """The fixed opening words of every action template (the text before its first placeholder)."""
    starts = []
    for path in sorted(TEMPLATES.glob("action-*.md")):
        head = path.read_text("utf-8").split("${", 1)[0].strip()
        starts.append(" ".join(head.split()[:4]))
    return starts


REQUIRED_STARTS = _required_starts()


def required_words(detail: str) -> int:
    """Words of the paragraphs (or list items) that hold a required sentence."""
    total = 0
    for block in re.split(r"\n\s*\n|\n(?=- )", detail):
        text = " ".join(block.split())
        plain = text.lstrip("- ").replace("**", "")
        starts = any(plain.startswith(start) for start in REQUIRED_STARTS if len(start.split()) > 2)
        if starts or R7C in plain or IMMUNOGENICITY in plain:
            total += len(text.split())
    return total


def check_r9a(card: dict[str, Any]) -> None:
    summary, detail = card["summary"], card.get("detail", "")
    assert len(summary) < 140, summary
    words = len(detail.split())
    limit = LIMITS[card["indicator"]] + required_words(detail)
    assert words <= limit, f"{words} words > {limit}: {summary}"
    for forbidden in (r"\bE\d{1,2}\b", r"\bR\d[a-f]?\b", "doi:", "#### "):
        assert not re.search(forbidden, detail), (forbidden, summary)


def _explain(path: Path, policy: Policy = DEFAULT_POLICY) -> tuple[dict[str, Any], Any]:
    fixture = load_fixture(path)
    return fixture, explain_fixture(fixture, policy)


@pytest.mark.parametrize("path", PATIENT_VIEW_FIXTURES, ids=[p.stem for p in PATIENT_VIEW_FIXTURES])
def test_patient_view_card_meets_r9a(path: Path) -> None:
    """Every foot-drop card: summary < 140 characters, detail within R9a's word limit."""
    _, explained = _explain(path)
    for card in explained.cards:
        check_r9a(card)


@pytest.mark.parametrize("path", PREVENTION_FIXTURES, ids=[p.stem for p in PREVENTION_FIXTURES])
def test_prevention_card_meets_r9a(path: Path) -> None:
    """Every prevention card (order-select / order-sign) meets the same limits."""
    fixture = load_fixture(path)
    request = fixture["request"]
    now = datetime.fromisoformat(fixture["evalTime"].replace("Z", "+00:00"))
    cards = evaluate_prevention(
        request["hook"],
        request["context"],
        flatten(request.get("prefetch")),
        content(),
        now,
        request["hookInstance"],
    ).cards
    assert cards or not fixture["expected"]["cards"]
    for card in cards:
        check_r9a(card)


@pytest.mark.parametrize("path", PATIENT_VIEW_FIXTURES, ids=[p.stem for p in PATIENT_VIEW_FIXTURES])
def test_every_footdrop_card_carries_one_smart_link(path: Path) -> None:
    """With a launch URL every card has exactly one link: the SMART app, FHIR references only."""
    _, explained = _explain(path, Policy(app_launch_url=LAUNCH))
    for card in explained.cards:
        (link,) = card["links"]
        assert link["type"] == "smart" and link["url"] == LAUNCH
        assert link["label"] == "Evidence and timeline"
        context = json.loads(link["appContext"])
        assert context["service"] == "footdrop-im-injection"
        assert context["kind"] == explained.trace["outcome"]["kind"]
        refs = [context["trigger"], *context["injections"]]
        for ref in refs:
            assert ref is None or re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}", ref), ref
        assert set(context) == {"service", "kind", "trigger", "injections"}
    if not explained.cards:
        assert explained.trace["outcome"] == {
            "card": False,
            "kind": "none",
            "indicator": None,
            "summary": None,
        }


def test_no_launch_url_keeps_the_guideline_link() -> None:
    """Without CDS_PUBLIC_URL there is no app to link to: the card keeps the guideline link."""
    _, explained = _explain(PATIENT_VIEW_FIXTURES[0])
    (link,) = explained.cards[0]["links"]
    assert link["type"] == "absolute" and "doi.org" in link["url"]


def test_served_card_carries_the_smart_link_from_cds_public_url(settings, clock) -> None:
    """Over real HTTP with CDS_PUBLIC_URL set: the card's one link is the app's launch URL and
    the response still validates against the CDS Hooks 2.0 schema."""
    import requests

    from cds_service import create_app
    from tests.conftest import FOOTDROP, LiveServer, assert_valid_response, dispose, with_settings

    fixture = load_fixture(PATIENT_VIEW_FIXTURES[0])
    clock.set(fixture["evalTime"])
    application = create_app(
        with_settings(settings, public_url="https://cds.example.org/"), clock=clock
    )
    try:
        with LiveServer(application) as server:
            response = requests.post(
                f"{server.url}/cds-services/{FOOTDROP}", json=fixture["request"], timeout=10
            )
    finally:
        dispose(application)
    assert response.status_code == 200
    body = response.json()
    assert_valid_response(body)
    (link,) = body["cards"][0]["links"]
    assert link["url"] == "https://cds.example.org/app/launch" and link["type"] == "smart"
    assert json.loads(link["appContext"])["trigger"] == "Condition/pv01-cond-footdrop"


def test_served_card_without_cds_public_url_links_the_host_called(settings, clock) -> None:
    """Outside production with CDS_PUBLIC_URL unset, the link names the host the client called
    (as the JWT audience does), so the development preview and the sandbox show the app too."""
    import requests

    from cds_service import create_app
    from tests.conftest import FOOTDROP, LiveServer, dispose, with_settings

    fixture = load_fixture(PATIENT_VIEW_FIXTURES[0])
    clock.set(fixture["evalTime"])
    application = create_app(with_settings(settings, public_url=None), clock=clock)
    try:
        with LiveServer(application) as server:
            response = requests.post(
                f"{server.url}/cds-services/{FOOTDROP}", json=fixture["request"], timeout=10
            )
            preview = requests.get(
                f"{server.url}/?demo=foot-drop-after-gluteal-injection", timeout=30
            )
    finally:
        dispose(application)
    (link,) = response.json()["cards"][0]["links"]
    assert link["url"] == f"{server.url}/app/launch" and link["type"] == "smart"
    assert f"{server.url}/app/launch" in preview.text  # the preview calls the hook as its client
