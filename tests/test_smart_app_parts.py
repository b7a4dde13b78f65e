"""The SMART app's parts without a browser: plot, scopes, cookie, recording, settings, faults."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import requests_mock
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cds_service.app import record, smart
from cds_service.app.errors import AppError
from cds_service.app.page import build_plot, relative_day
from cds_service.app.session import SessionBox, SessionError, development_secret
from cds_service.config import Settings, SettingsError
from cds_service.domain.facts import extract_facts
from cds_service.domain.mrc import MrcCodes, MrcRow
from cds_service.edge.content import load_content
from tests.conftest import DEFAULT_CONTENT_DIR, dispose, with_settings

TODAY = "2025-09-01"


def hand_trace(grades: int = 4) -> dict[str, Any]:
    """A trace as the engine's contract describes it, made by hand."""
    return {
        "service": "footdrop-im-injection",
        "evaluated_at": "2025-09-01T10:00:00+00:00",
        "today": TODAY,
        "time_zone": {"zone": "UTC", "assumptions": ["dateTimes without an offset read in UTC"]},
        "outcome": {"card": True, "kind": "attribution", "indicator": "warning",
                    "summary": "Left foot drop after a left gluteal IM injection"},
        "resources": [
            {"reference": "Procedure/im", "type": "Procedure", "date": "2025-06-01",
             "role": "injection", "note": "IM injection"},
            {"reference": "Condition/fd", "type": "Condition", "date": "2025-06-01",
             "role": "trigger", "note": "Foot drop"},
        ],
        "steps": [{"rule": "R4", "title": "Timing", "result": "immediate", "detail": "5 h"}],
        "red_flags": [{"pathway": "afp", "title": "Acute flaccid paralysis", "fired": False,
                       "why": "adult"}],
        "competing_causes": [{"cause": "L5 radiculopathy", "reference": "Condition/l5",
                              "decisive": False, "why": "onset 2 years earlier"}],
        "thresholds": [{"name": "immediate_window", "value": "48 h", "rule": "R4"}],
        "ignored": [{"reference": "Observation/x", "why": "entered in error"}],
        "citations": [{"id": "E3", "text": "Villarejo 1993"}],
        "page_notes": ["#### Why\n\nSame side, <script>alert(1)</script> **plausible** site."],
        "plan": [
            {"order": "EMG_NCS", "label": "EMG/NCS", "status": "suggested", "due": "2025-09-04",
             "window_end": None, "reference": None},
            {"order": "AFO", "label": "Ankle-foot orthosis", "status": "done", "due": None,
             "window_end": None, "reference": "DeviceRequest/afo"},
        ],
        "timeline": {
            "anchor": "2025-06-01",
            "today": TODAY,
            "injections": [{"date": "2025-06-01", "site": "dorsogluteal", "side": "left",
                            "reference": "Procedure/im"}],
            "onset": {"earliest": "2025-06-01", "latest": "2025-06-02",
                      "reference": "Condition/fd"},
            "grades": [
                {"date": f"2025-0{6 + i // 2}-{10 + i:02d}", "side": ("left", "right")[i % 2],
                 "muscle": "dorsiflexion", "grade": str(1 + i // 2), "value": 1 + i // 2,
                 "reference": f"Observation/g{i}"}
                for i in range(grades)
            ] + [{"date": "2025-07-01", "side": "left", "muscle": "eversion", "grade": "3",
                  "value": 3, "reference": "Observation/ev"}],
            "orders": [{"kind": "AFO", "date": "2025-06-05", "status": "completed",
                        "reference": "DeviceRequest/afo"}],
            "milestones": [
                {"key": "emg_window", "label": "EMG/NCS from day 21", "start": "2025-06-22",
                 "end": None},
                {"key": "tendon_transfer", "label": "Tendon transfer", "start": "2026-06-01",
                 "end": None},
            ],
        },
    }  # fmt: skip


def test_plot_has_one_mark_per_dorsiflexion_grade_and_a_line_per_side():
    """Dorsiflexion grades become marks and per-side lines; other movements stay off the plot."""
    plot = build_plot(hand_trace(4)["timeline"])
    assert [g["reference"] for g in plot.grades if g["side_name"] == "left"] == [
        "Observation/g0",
        "Observation/g2",
    ]
    assert {line["side"] for line in plot.lines} == {"left", "right"}
    assert all(plot.left <= g["x"] <= plot.right for g in plot.grades)
    higher = next(g for g in plot.grades if g["reference"] == "Observation/g2")
    lower = next(g for g in plot.grades if g["reference"] == "Observation/g0")
    assert higher["y"] < lower["y"]  # grade 2 drawn above grade 1
    assert plot.injections[0]["x"] < plot.today_x < plot.milestones[1]["x"]
    assert plot.milestones[1]["anchor"] == "end"  # the far label stays inside the plot


def test_relative_days():
    """Plan dates read relative to today."""
    today = date(2025, 9, 1)
    assert relative_day("2025-09-01", today) == "today"
    assert relative_day("2025-09-04", today) == "in 3 days"
    assert relative_day("2025-08-30T10:00:00Z", today) == "2 days ago"
    assert relative_day(None, today) == ""


def _render(app: Any, trace: dict[str, Any], scope: str) -> str:
    from cds_service.app.views import _render_page

    with app.test_request_context("/app/"):
        session = {"scope": scope, "csrf": "token", "app_context": {"trigger": "Condition/fd"}}
        return _render_page(trace, session)


def test_page_renders_a_hand_made_trace(app):
    """Every part of the contract reaches the page; markdown notes cannot inject HTML."""
    html = _render(app, hand_trace(4), "launch patient/Observation.rs patient/Observation.c")
    assert html.count('data-kind="grade"') == 4
    assert 'data-kind="milestone" data-key="emg_window"' in html
    assert 'data-kind="milestone" data-key="tendon_transfer"' in html
    assert 'data-kind="onset" data-earliest="2025-06-01" data-latest="2025-06-02"' in html
    assert 'data-kind="competing" data-decisive="no"' in html
    assert 'data-pathway="afp" data-fired="no"' in html
    assert "Villarejo 1993" in html and "entered in error" in html
    assert "<strong>plausible</strong>" in html and "<script>" not in html
    assert "in 3 days" in html and 'data-status="done"' in html
    assert 'class="focus"' in html  # the card's trigger is highlighted
    assert 'name="ankle-dorsiflexion-left"' in html and 'name="csrf" value="token"' in html


def test_page_without_write_scope_is_read_only(app):
    """Without patient/Observation.c the form is replaced by the reason it is read-only."""
    html = _render(app, hand_trace(2), "launch patient/Observation.rs")
    assert 'id="read-only"' in html and "<form" not in html


def test_scopes_are_v2_for_the_types_read_and_v1_only_when_advertised_alone():
    """v2 .rs scopes plus Observation.c; v1 .read/.write only for a v1-only server."""
    v2 = smart.scopes_for(["Observation", "Condition"], v2=True, standalone=False).split()
    assert v2 == ["launch", "patient/Condition.rs", "patient/Observation.rs",
                  "patient/Observation.c"]  # fmt: skip
    v1 = smart.scopes_for(["Condition"], v2=False, standalone=True).split()
    assert v1 == ["launch/patient", "patient/Condition.read", "patient/Observation.write"]
    assert smart._speaks_v2({"capabilities": ["permission-v2", "permission-v1"]})
    assert not smart._speaks_v2({"capabilities": ["permission-v1"]})
    assert not smart._speaks_v2({"scopes_supported": ["patient/*.read"]})
    assert smart._speaks_v2({})


@pytest.mark.parametrize(
    ("scope", "writable"),
    [
        ("patient/Observation.rs patient/Observation.c", True),
        ("patient/Observation.cruds", True),
        ("patient/Observation.write", True),
        ("patient/*.write", True),
        ("patient/Observation.rs", False),
        ("patient/Observation.read patient/Condition.c", False),
        ("", False),
    ],
)
def test_write_scope(scope: str, writable: bool):
    """Only a granted create (v2 c) or v1 write on Observation allows recording."""
    assert smart.granted_write(scope) is writable


def test_session_cookie_is_sealed_and_expires(tmp_path: Path):
    """A sealed value opens only unaltered, with the same secret and purpose, within its age."""
    box = SessionBox("s" * 40, "session")
    sealed = box.seal({"access_token": "secret-token"})
    assert "secret-token" not in sealed
    assert box.open(sealed, 60) == {"access_token": "secret-token"}
    for other in (SessionBox("t" * 40, "session"), SessionBox("s" * 40, "launch")):
        with pytest.raises(SessionError):
            other.open(sealed, 60)
    with pytest.raises(SessionError):
        box.open(sealed[:-3] + "AAA", 60)
    with pytest.raises(SessionError):
        box.open(box.seal({"a": 1}, at=int(time.time()) - 120), 60)
    with pytest.raises(SessionError, match="missing"):
        box.open(None, 60)
    first = development_secret(tmp_path)
    assert len(first) >= 32 and development_secret(tmp_path) == first  # shared by workers


MRC = MrcCodes(
    rows=(
        MrcRow("http://example.org/fhir/CodeSystem/site-flowsheet", "MRC-ANKLE-DF-L",
               "ankle-dorsiflexion", "left"),
        MrcRow("http://example.org/fhir/CodeSystem/site-flowsheet", "MRC-ANKLE-DF",
               "ankle-dorsiflexion"),
    ),
    code_system="https://hospital.example/fhir/CodeSystem/mrc",
)  # fmt: skip


def test_recorded_observations_read_back_as_the_same_grades():
    """What the form writes, the engine reads back (R1b): movement, side and grade."""
    fields = {f.name: f for f in record.recordable(MRC)}
    assert fields["ankle-dorsiflexion-left"].coding["code"] == "MRC-ANKLE-DF-L"
    assert fields["ankle-dorsiflexion-right"].body_site  # unlateralised row + bodySite text
    assert fields["ankle-eversion-left"].coding["code"] == "mrc-ankle-eversion"
    grades = record.parse_form(
        {"ankle-dorsiflexion-left": "4+", "ankle-dorsiflexion-right": "5",
         "ankle-eversion-left": "3", "ankle-plantarflexion-right": ""}, MRC
    )  # fmt: skip
    now = datetime(2025, 9, 1, 10, tzinfo=UTC)
    resources = [
        {**record.observation(g, "p1", now, MRC), "id": f"o{i}"} for i, g in enumerate(grades)
    ]
    content = load_content(DEFAULT_CONTENT_DIR)
    facts = extract_facts(resources, content, "p1", now, mrc=MRC)
    read = {(g.movement, g.side, g.grade, g.sub) for g in facts.muscle_grades}
    assert read == {
        ("ankle-dorsiflexion", "left", 4, "+"),
        ("ankle-dorsiflexion", "right", 5, ""),
        ("ankle-eversion", "left", 3, ""),
    }


@pytest.mark.parametrize(
    "form", [{}, {"ankle-dorsiflexion-left": "6"}, {"ankle-dorsiflexion-left": "5+"}]
)
def test_bad_grades_are_refused(form: dict[str, str]):
    """No grade, or one outside 0-5 (4- and 4+ allowed), is a 400."""
    with pytest.raises(AppError) as error:
        record.parse_form(form, MRC)
    assert error.value.status == 400


def test_unreachable_or_slow_servers_are_502_and_504():
    """Discovery, token exchange and writes turn network faults into 502/504 (fault injection)."""
    client = smart.ClientConfig("app")
    with requests_mock.Mocker() as mock:
        mock.get("https://ehr.example/fhir/.well-known/smart-configuration",
                 exc=requests.ConnectTimeout)  # fmt: skip
        with pytest.raises(AppError) as error:
            smart.discover("https://ehr.example/fhir")
        assert error.value.status == 504
        mock.post("https://ehr.example/token", exc=requests.ReadTimeout)
        with pytest.raises(AppError) as error:
            smart.exchange_code(client, "https://ehr.example/token", code="c", verifier="v",
                                redirect_uri="https://cds/app/callback")  # fmt: skip
        assert error.value.status == 504
        mock.post("https://ehr.example/token", status_code=400, json={"error": "invalid_grant"})
        with pytest.raises(AppError) as error:
            smart.exchange_code(client, "https://ehr.example/token", code="c", verifier="v",
                                redirect_uri="https://cds/app/callback")  # fmt: skip
        assert error.value.status == 401
        mock.post("https://ehr.example/fhir", exc=requests.ConnectionError)
        with pytest.raises(AppError) as error:
            record.write("https://ehr.example/fhir", "t", [{"resourceType": "Observation"}])
        assert error.value.status == 502


def test_confidential_client_signs_a_private_key_jwt(tmp_path: Path):
    """private_key_jwt: the token request carries an RS384 assertion signed with our key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    client = smart.ClientConfig("app-id", "private_key_jwt", pem)
    with requests_mock.Mocker() as mock:
        mock.post("https://ehr.example/token",
                  json={"access_token": "a", "token_type": "Bearer", "patient": "p1"})  # fmt: skip
        token = smart.exchange_code(
            client, "https://ehr.example/token", code="c", verifier="v",
            redirect_uri="https://cds/app/callback",
        )  # fmt: skip
        sent = parse_qs(mock.last_request.text)
    assert token["patient"] == "p1"
    assert sent["code_verifier"] == ["v"] and sent["grant_type"] == ["authorization_code"]
    claims = jwt.decode(sent["client_assertion"][0], key.public_key(), algorithms=["RS384"],
                        audience="https://ehr.example/token")  # fmt: skip
    assert claims["iss"] == claims["sub"] == "app-id"


def test_authorization_url_has_pkce_state_aud_and_launch():
    """The authorization request: code, S256 challenge, state, aud = iss, the EHR's launch."""
    config = smart.SmartConfig("https://ehr.example/authorize", "https://ehr.example/token", True)
    url, state, verifier = smart.authorization_url(
        smart.ClientConfig("app"), config, iss="https://ehr.example/fhir",
        redirect_uri="https://cds/app/callback", scope="launch patient/Condition.rs",
        launch="L1",
    )  # fmt: skip
    query = parse_qs(urlsplit(url).query)
    assert query["response_type"] == ["code"] and query["state"] == [state]
    assert query["code_challenge_method"] == ["S256"] and verifier not in url
    assert query["aud"] == ["https://ehr.example/fhir"] and query["launch"] == ["L1"]


def test_iss_allow_list(settings: Settings):
    """Listed FHIR bases only; production with no list trusts none (no SSRF through iss)."""
    from cds_service import create_app

    listed = with_settings(settings, fhir_origins={"https://ehr": ("https://fhir.ehr/r4",)})
    for current, iss, allowed in [
        (listed, "https://fhir.ehr/r4", True),
        (listed, "https://evil.example/fhir", False),
        (settings, "http://127.0.0.1:9/fhir", True),
        (with_settings(settings, allow_insecure_fhir=False), "http://10.0.0.1/fhir", False),
    ]:
        app = create_app(current)
        try:
            assert app.extensions["cds_app"].iss_allowed(iss) is allowed, iss
        finally:
            dispose(app)


def test_settings_of_the_app():
    """Production refuses a missing app secret; a confidential client needs its credential."""
    with pytest.raises(SettingsError, match="CDS_APP_SECRET"):
        Settings.from_env({"CDS_ENVIRONMENT": "production"})
    with pytest.raises(SettingsError, match="CDS_APP_CLIENT_SECRET"):
        Settings.from_env({"CDS_APP_CLIENT_AUTH": "client_secret_basic"})
    with pytest.raises(SettingsError, match="CDS_APP_PRIVATE_KEY_FILE"):
        Settings.from_env({"CDS_APP_CLIENT_AUTH": "private_key_jwt"})
    settings = Settings.from_env(
        {"CDS_APP_FRAME_ANCESTORS": "https://ehr.example, 'self'", "CDS_APP_CLIENT_ID": "x"}
    )
    assert settings.app_frame_ancestors == ("https://ehr.example", "'self'")
    assert settings.app_client_id == "x" and settings.app_session_seconds == 3600


def test_pages_carry_a_strict_csp_and_never_cache(client):
    """No script at all, framing only by the configured ancestors, nothing cached."""
    response = client.get("/app/")
    assert response.status_code == 401
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'self'" in csp
    assert "script-src" not in csp and response.headers["Cache-Control"] == "no-store"


def test_a_foreign_state_or_csrf_token_of_any_text_is_a_400_not_a_500(app, client):
    """Secrets we issued are compared as bytes: non-ASCII input is a plain mismatch."""
    runtime = app.extensions["cds_app"]
    launch = runtime.launch_box.seal({"iss": "x", "state": "s", "verifier": "v", "token": "t"})
    client.set_cookie("footdrop_app_launch", launch, path="/app")
    assert client.get("/app/callback?state=%C3%A9&code=x").status_code == 400
    assert client.get("/app/callback?code=x").status_code == 400
    session = runtime.session_box.seal(
        {"iss": "http://127.0.0.1:9/fhir", "access_token": "t", "patient": "p", "csrf": "c",
         "scope": "patient/Observation.c", "expires": int(time.time()) + 60}
    )  # fmt: skip
    client.set_cookie("footdrop_app_session", session, path="/app")
    for token in ("é", "", "c "):
        response = client.post("/app/record", data={"csrf": token, "ankle-dorsiflexion-left": "5"})
        assert response.status_code == 400, token
    confirm = client.post("/app/record", data={"csrf": "c", "ankle-dorsiflexion-left": "5"})
    assert confirm.status_code == 200 and b"Record these grades" in confirm.data


def test_a_token_too_large_for_the_cookie_is_a_clear_502(app, client):
    """An access token that could not fit an encrypted cookie is refused with a reason."""
    runtime = app.extensions["cds_app"]
    launch = runtime.launch_box.seal(
        {"iss": "x", "state": "s", "verifier": "v", "token": "https://ehr.example/token"}
    )
    client.set_cookie("footdrop_app_launch", launch, path="/app")
    with requests_mock.Mocker() as mock:
        token = {"access_token": "a" * 3000, "token_type": "Bearer", "patient": "p"}
        mock.post("https://ehr.example/token", json=token)
        response = client.get("/app/callback?state=s&code=x")
    assert response.status_code == 502 and b"too large" in response.data
    assert "footdrop_app_session" not in response.headers.get("Set-Cookie", "")


def test_the_development_secret_is_written_only_when_the_app_is_used(
    settings, tmp_path, monkeypatch
):
    """An app that never serves /app (e.g. ``cds-service call``) leaves no var/app-secret."""
    from cds_service import create_app

    monkeypatch.chdir(tmp_path)
    app = create_app(settings)
    try:
        assert not (tmp_path / "var" / "app-secret").exists()
        app.test_client().get("/app/")  # reads the session cookie: needs the key
        assert (tmp_path / "var" / "app-secret").stat().st_mode & 0o777 == 0o600
    finally:
        dispose(app)
