"""The evidence and timeline app in Chromium, against real parts.

A SEKMET FHIR server holds a fixture patient moved to today; an EHR double (Authlib's OAuth 2
server) launches the app; the service runs on loopback with the real clock. The test calls the
patient-view hook, follows the card's SMART link as an EHR does, reads the page, records a grade,
and walks every failure path (wrong state, no or expired session, denied access, read-only
scope, forged form, unreachable FHIR and authorization servers).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from werkzeug.serving import make_server

from cds_service import create_app
from cds_service.config import DEFAULT_CONTENT_DIR, Settings
from tests.browser.conftest import ARTIFACTS, axe_violations, screenshot
from tests.browser.ehr_double import EhrDouble
from tests.browser.shifted import fixture_resources, shift_days
from tests.conftest import FIXTURES, FOOTDROP, dispose, load_json
from tests.integration.fhir_server import SekmetServer, running_fhir_server

FIXTURE = FIXTURES / "patient-view" / "13-no-recovery-after-4-months-surgical-referral.json"
PATIENT = "pv13"
SECRET = "browser-test-secret-" + "x" * 32


@dataclass
class World:
    fhir: SekmetServer
    ehr: EhrDouble
    cds_url: str
    fixture: dict[str, Any]
    days: int
    settings: Settings
    unreachable: str  # a trusted FHIR base on a closed port (no server answers)


class _Late:
    """A WSGI app set after the server is bound (the app needs its own URL as CDS_PUBLIC_URL)."""

    app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    fixture = load_json(FIXTURE)
    days = shift_days(fixture["evalTime"])
    with running_fhir_server(tmp_path_factory.mktemp("fhir")) as fhir:
        fhir.seed(fixture_resources(fixture, days))
        ehr = EhrDouble(fhir.base_url, fhir.token)
        late = _Late()
        server = make_server("127.0.0.1", 0, late, threaded=True)
        url = f"http://127.0.0.1:{server.server_port}"
        ehr.client.redirect_prefix = url
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            unreachable = f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"
        settings = Settings(
            environment="test",
            database_url=f"sqlite:///{tmp_path_factory.mktemp('db') / 'f.sqlite3'}",
            content_dir=DEFAULT_CONTENT_DIR,
            allow_insecure_fhir=True,
            public_url=url,
            fhir_origins={"https://ehr.example": (ehr.fhir_base, unreachable)},
            app_frame_ancestors=("'self'", ehr.base_url),
            app_secret=SECRET,
            fhir_timeout_seconds=5.0,
            fhir_deadline_seconds=10.0,
        )
        late.app = create_app(settings)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield World(fhir, ehr, url, fixture, days, settings, unreachable)
        finally:
            server.shutdown()
            thread.join(5)
            server.server_close()
            dispose(late.app)
            ehr.close()


def call_hook(world: World) -> dict[str, Any]:
    """patient-view over real HTTP; the service reads the FHIR server itself (no prefetch)."""
    body = {
        "hook": "patient-view",
        "hookInstance": "5f0e2c1a-8d4b-4f3e-9a61-0c2b7d9e4f10",
        "fhirServer": world.fhir.base_url,
        "fhirAuthorization": {
            "access_token": world.fhir.token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.rs",
            "subject": "footdrop-cds",
        },
        "context": {"userId": "Practitioner/example", "patientId": PATIENT},
    }
    response = requests.post(f"{world.cds_url}/cds-services/{FOOTDROP}", json=body, timeout=60)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1
    return cards[0]


def smart_link(card: dict[str, Any]) -> dict[str, Any]:
    links = [link for link in card.get("links") or () if link.get("type") == "smart"]
    assert len(links) == 1, card.get("links")
    return links[0]


def launch(page: Any, world: World, link: dict[str, Any] | None = None) -> Any:
    """Open the app as the EHR does: the link's URL with ``iss`` and a fresh ``launch``."""
    url = link["url"] if link else f"{world.cds_url}/app/launch"
    context = link.get("appContext") if link else None
    launch_id = world.ehr.launch(PATIENT, context)
    return page.goto(f"{url}?iss={world.ehr.fhir_base}&launch={launch_id}")


def shifted_dates(world: World, kind: str) -> list[str]:
    """The dates (shifted) of the fixture's MRC dorsiflexion grade Observations."""
    from tests.browser.shifted import fixture_resources

    resources = fixture_resources(world.fixture, world.days)
    return sorted(
        r["effectiveDateTime"][:10]
        for r in resources
        if r["resourceType"] == "Observation" and kind in json.dumps(r.get("code"))
    )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__}")


def test_card_link_opens_page_and_a_recorded_grade_reaches_the_next_card(
    world: World, browser_page: Any
) -> None:
    """Hook → card link → SMART launch → plot, evidence and plan → record → FHIR → next card;
    the service's log never carries the patient, a token or the session."""
    records = _Records()
    logging.getLogger("cds_service").addHandler(records)
    try:
        _walk_the_main_path(world, browser_page)
    finally:
        logging.getLogger("cds_service").removeHandler(records)
    assert any("app launched" in line for line in records.lines)
    secrets = [PATIENT, *world.ehr.tokens]
    assert not [line for line in records.lines if any(s in line for s in secrets)]


def _walk_the_main_path(world: World, browser_page: Any) -> None:
    card = call_hook(world)
    assert card["indicator"] == "warning"
    link = smart_link(card)
    assert link["label"] == "Evidence and timeline"
    assert link["url"] == f"{world.cds_url}/app/launch"
    context = json.loads(link["appContext"])
    assert context["service"] == FOOTDROP and context["trigger"] == "Condition/pv13-cond-footdrop"

    page = browser_page
    response = launch(page, world, link)
    assert response.status == 200, page.content()[:500]
    assert urlsplit(page.url).path == "/app/"
    assert "access_token" not in page.url and "code=" not in page.url
    asked = world.ehr.authorize_requests[-1]
    assert asked["code_challenge_method"] == "S256" and asked["state"]
    assert asked["aud"] == world.ehr.fhir_base and asked["launch"]
    scopes = asked["scope"].split()
    assert "launch" in scopes and "patient/Observation.rs" in scopes
    assert "patient/Observation.c" in scopes and "patient/Condition.rs" in scopes
    assert not any(s.endswith(".read") or s.startswith(("user/", "system/")) for s in scopes)

    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["footdrop_app_session"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "None"
    assert "footdrop_app_launch" not in cookies  # the launch cookie is spent
    html = page.content()
    assert session["value"] not in html and "<script" not in html

    # the plot: one mark per MRC dorsiflexion grade, on its date; the milestones; today
    grade_dates = shifted_dates(world, "mrc-ankle-dorsiflexion")
    marks = page.locator('[data-kind="grade"]')
    assert sorted(marks.nth(i).get_attribute("data-date") for i in range(marks.count())) == (
        grade_dates
    )
    assert {marks.nth(i).get_attribute("data-grade") for i in range(marks.count())} == {"1"}
    milestones = page.locator('[data-kind="milestone"]')
    assert milestones.count() >= 4
    keys = [milestones.nth(i).get_attribute("data-key") for i in range(milestones.count())]
    assert all(keys) and len(set(keys)) == len(keys)
    assert page.locator('[data-kind="injection"]').count() == 1
    assert page.locator('[data-kind="injection"]').get_attribute("data-side") == "left"
    assert page.locator('[data-kind="today"]').count() == 1
    assert page.locator('[data-kind="onset"]').count() == 1

    # the evidence and the plan
    evidence = page.locator('#evidence [data-kind="evidence"]')
    references = {evidence.nth(i).get_attribute("data-reference") for i in range(evidence.count())}
    assert {"Procedure/pv13-proc-im", "Condition/pv13-cond-footdrop"} <= references
    assert page.locator('[data-kind="plan"]').count() >= 1
    assert page.locator('[data-kind="threshold"]').count() >= 3
    pathways = page.locator('[data-kind="red-flag"]')
    assert pathways.count() >= 5  # every red-flag pathway checked is listed, fired or not
    assert {pathways.nth(i).get_attribute("data-fired") for i in range(pathways.count())} == {"no"}
    for kind in ("step", "citation", "tz-assumption"):
        assert page.locator(f'[data-kind="{kind}"]').count() >= 1, kind

    for width in (1280, 400):
        page.set_viewport_size({"width": width, "height": 900})
        assert axe_violations(page) == [], width
        screenshot(page, f"app-page-{width}")
    # the README's picture (docs/app-page.png): the first screen at full width
    page.set_viewport_size({"width": 1280, "height": 900})
    page.screenshot(path=str(ARTIFACTS / "app-page-first-screen.png"))

    # record today's grade: form → confirmation → FHIR server → the page → the next card
    page.set_viewport_size({"width": 1280, "height": 900})
    page.select_option("#g-ankle-dorsiflexion-left", "5")
    page.click("text=Review grades")
    assert "Confirm today's grades" in page.content()
    assert page.locator('[data-field="ankle-dorsiflexion-left"]').inner_text().endswith("5/5")
    page.click("text=Record these grades")
    assert page.locator("[role=status]").inner_text() == "Recorded 1 grade(s)."
    assert page.locator('[data-kind="grade"]').count() == len(grade_dates) + 1
    stored = world.fhir.get(f"Observation?patient={PATIENT}&_count=100")
    fives = [
        e["resource"] for e in stored.get("entry", []) if e["resource"].get("valueInteger") == 5
    ]
    assert len(fives) == 1
    assert fives[0]["code"]["coding"][0]["code"] == "MRC-ANKLE-DF-L"
    assert fives[0]["subject"]["reference"] == f"Patient/{PATIENT}"
    after = call_hook(world)
    assert after["indicator"] == "info" and after["summary"] != card["summary"]


def test_the_app_works_in_the_ehrs_400_px_iframe_and_nowhere_else(
    world: World, browser_page: Any
) -> None:
    """Framed by the configured EHR origin the launch completes in the iframe (cookies and all);
    an origin not in CDS_APP_FRAME_ANCESTORS gets nothing rendered."""
    page = browser_page
    launch_url = f"{world.cds_url}/app/launch?iss={world.ehr.fhir_base}"
    trusted = f"{world.ehr.base_url}/ehr?src="
    page.goto(trusted + quote(f"{launch_url}&launch={world.ehr.launch(PATIENT, None)}"))
    frame = page.frame_locator("iframe")
    assert frame.locator('[data-kind="grade"]').count() >= 3
    assert frame.locator("h1").inner_text() == "Evidence and timeline"
    assert axe_violations(page) == []
    screenshot(page, "app-page-in-ehr-iframe")

    foreign = trusted.replace("127.0.0.1", "localhost")
    page.goto(foreign + quote(f"{launch_url}&launch={world.ehr.launch(PATIENT, None)}"))
    page.wait_for_load_state("load")
    app_frames = [f for f in page.frames if f != page.main_frame]
    assert app_frames and not any(
        f.url.startswith(world.cds_url) and "Evidence and timeline" in f.content()
        for f in app_frames
    )


def _error(page: Any, response: Any, status: int) -> str:
    assert response is not None and response.status == status, page.content()[:400]
    text = page.locator("main").inner_text()
    assert "Traceback" not in page.content()
    return text


def test_failure_paths_give_a_clear_page_with_the_right_status(world: World, chromium: Any) -> None:
    """Wrong state 400; no, forged or expired session 401; denied 401; read-only; forged form
    400; FHIR server down 502; authorization server unreachable 502; untrusted iss 400; then a
    standalone launch (iss only) works without appContext."""
    context = chromium.new_context(viewport={"width": 400, "height": 800})
    context.set_default_timeout(60_000)
    ehr = world.ehr
    try:
        page = context.new_page()
        text = _error(page, page.goto(f"{world.cds_url}/app/"), 401)
        assert "launch the app again" in text

        # wrong state: the authorization server's answer does not belong to this launch
        ehr.hold = True
        try:
            launch(page, world)
            assert "held" in page.content()
        finally:
            ehr.hold = False
        text = _error(page, page.goto(f"{world.cds_url}/app/callback?code=x&state=forged"), 400)
        assert "state" in text

        ehr.deny = True
        try:
            text = _error(page, launch(page, world), 401)
            assert "denied" in text
        finally:
            ehr.deny = False

        ehr.read_only = True
        try:
            assert launch(page, world).status == 200
            assert "Read-only" in page.locator("#read-only").inner_text()
            assert page.locator("form.grades").count() == 0
            forged = page.request.post(
                f"{world.cds_url}/app/record", form={"ankle-dorsiflexion-left": "5", "csrf": "x"}
            )
            assert forged.status == 400
        finally:
            ehr.read_only = False

        assert launch(page, world).status == 200
        forged = page.request.post(
            f"{world.cds_url}/app/record/confirm",
            form={"ankle-dorsiflexion-left": "5", "csrf": "forged"},
        )
        assert forged.status == 400 and "did not come from this page" in forged.text()

        ehr.fhir_down = True
        try:
            text = _error(page, page.goto(f"{world.cds_url}/app/"), 502)
            assert "FHIR server" in text
        finally:
            ehr.fhir_down = False

        # a session sealed two hours ago has expired; a forged one is refused
        from cds_service.app.session import SessionBox

        old = SessionBox(SECRET, "session").seal(
            {"iss": ehr.fhir_base, "access_token": "t", "patient": PATIENT, "scope": "",
             "csrf": "c", "expires": int(time.time()) + 3600},
            at=int(time.time()) - 7200,
        )  # fmt: skip
        for value in (old, old[:-4] + "AAAA"):
            context.clear_cookies()
            context.add_cookies(
                [{"name": "footdrop_app_session", "value": value, "url": world.cds_url}]
            )
            _error(page, page.goto(f"{world.cds_url}/app/"), 401)

        text = _error(page, page.goto(f"{world.cds_url}/app/launch?iss={world.unreachable}"), 502)
        assert "SMART configuration" in text
        untrusted = f"{world.cds_url}/app/launch?iss={world.fhir.base_url}&launch=x"
        assert "not one this service" in _error(page, page.goto(untrusted), 400)
        _error(page, page.goto(f"{world.cds_url}/app/launch"), 400)
        assert axe_violations(page) == []

        # standalone launch (iss only): launch/patient, the user picks the patient at the EHR
        ehr.standalone_patient = PATIENT
        try:
            response = page.goto(f"{world.cds_url}/app/launch?iss={ehr.fhir_base}")
            assert response is not None and response.status == 200
            scopes = ehr.authorize_requests[-1]["scope"].split()
            assert "launch/patient" in scopes and "launch" not in scopes
            assert "launch" not in ehr.authorize_requests[-1]
            assert page.locator('[data-kind="grade"]').count() >= 3
            assert page.locator("#opened-from").count() == 0  # no appContext: recomputed
        finally:
            ehr.standalone_patient = None
    finally:
        context.close()
