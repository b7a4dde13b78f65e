"""Caller authentication through the app: real signed JWTs, a real JWKS server on loopback."""

from __future__ import annotations

import re
import time

import pytest
import requests

from cds_service import create_app
from cds_service.edge.jwt_auth import JwtPolicy, JwtVerifier
from tests.conftest import FOOTDROP, LiveServer, dispose, patient_view_request, with_settings

from .conftest import ISSUER, TokenMinter

PUBLIC = "https://cds.example.org"
HOOK_AUD = f"{PUBLIC}/cds-services/{FOOTDROP}"
FEEDBACK_AUD = f"{HOOK_AUD}/feedback"
FEEDBACK = {
    "feedback": [
        {
            "card": "c1",
            "outcome": "overridden",
            "overrideReason": {"reason": {"code": "x", "system": "http://example.org/r"}},
            "outcomeTimestamp": "2025-06-13T10:00:00Z",
        }
    ]
}


@pytest.fixture
def secured(settings, clock, trusted_jwks):
    """An app with auth on that trusts ISSUER's JWKS on the loopback server."""
    app = create_app(
        with_settings(
            settings, auth=True, jwt_issuers={ISSUER: trusted_jwks.url}, public_url=PUBLIC
        ),
        clock=clock,
    )
    try:
        yield app
    finally:
        dispose(app)


def minter(audience: str = HOOK_AUD) -> TokenMinter:
    return TokenMinter(audience=audience, now=int(time.time()))


def post_hook(app, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().post(
        f"/cds-services/{FOOTDROP}", json=patient_view_request(), headers=headers
    )


def test_valid_es384_token_is_accepted_on_a_hook_call(secured, ec_key):
    """A hook call carrying a valid ES384 JWT from a trusted issuer is answered."""
    assert post_hook(secured, minter().sign(ec_key)).status_code == 200


def test_valid_rs384_token_is_accepted_on_feedback(secured, rsa_key):
    """Feedback with an RS384 JWT whose aud is the feedback URL is stored."""
    token = minter(FEEDBACK_AUD).sign(rsa_key)
    response = secured.test_client().post(
        f"/cds-services/{FOOTDROP}/feedback",
        json=FEEDBACK,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200


def test_missing_token_is_401_with_a_short_json_body(secured):
    """Without a JWT the call is refused with 401, a JSON body and a Bearer challenge."""
    response = post_hook(secured, None)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_feedback_without_token_is_401_and_nothing_is_stored(secured):
    """Unauthenticated feedback is refused before anything is stored."""
    response = secured.test_client().post(f"/cds-services/{FOOTDROP}/feedback", json=FEEDBACK)
    assert response.status_code == 401
    assert secured.extensions["cds_runtime"].store.count() == 0


@pytest.mark.parametrize(
    "forge",
    [
        lambda m, key: m.unsigned(key),
        lambda m, key: m.hmac_with_public_key(key),
        lambda m, key: m.sign(key, m.claims(exp=int(time.time()) - 120)),
        lambda m, key: m.sign(key, m.claims(aud=f"{PUBLIC}/cds-services")),
        lambda m, key: m.sign(key, m.claims(iss="https://evil.example")),
        lambda m, key: m.sign(key, m.claims(jti=None)),
        lambda m, key: m.with_payload(m.sign(key), m.claims(aud=HOOK_AUD, iss=ISSUER, tenant="x")),
    ],
    ids=["none", "hs256-public-key", "expired", "wrong-aud", "untrusted-iss", "no-jti", "tampered"],
)
def test_forged_tokens_are_401_over_the_app(secured, ec_key, forge):
    """Unsigned, key-confused, expired, misaddressed, untrusted or tampered tokens get 401."""
    assert post_hook(secured, forge(minter(), ec_key)).status_code == 401


def test_replayed_token_is_refused_across_workers(settings, clock, trusted_jwks, ec_key):
    """A jti used on one worker is refused on another sharing the database (not process memory)."""
    secure = with_settings(
        settings, auth=True, jwt_issuers={ISSUER: trusted_jwks.url}, public_url=PUBLIC
    )
    first, second = create_app(secure, clock=clock), create_app(secure, clock=clock)
    token = minter().sign(ec_key)
    try:
        assert post_hook(first, token).status_code == 200
        assert post_hook(second, token).status_code == 401
        assert post_hook(first, token).status_code == 401
    finally:
        dispose(first)
        dispose(second)


def test_discovery_and_preflight_need_no_token(secured):
    """Discovery and CORS preflight stay open so the sandbox can list the services."""
    client = secured.test_client()
    assert client.get("/cds-services").status_code == 200
    preflight = client.options(
        f"/cds-services/{FOOTDROP}",
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert preflight.status_code in (200, 204)


def test_audience_is_the_url_the_client_called_without_public_url(
    settings, clock, trusted_jwks, ec_key
):
    """Without CDS_PUBLIC_URL the expected aud is the loopback URL actually called."""
    app = create_app(
        with_settings(settings, auth=True, jwt_issuers={ISSUER: trusted_jwks.url}), clock=clock
    )
    try:
        with LiveServer(app) as server:
            url = f"{server.url}/cds-services/{FOOTDROP}"
            good = minter(url).sign(ec_key)
            wrong = minter(HOOK_AUD).sign(ec_key)
            bearer = {"Authorization": f"Bearer {good}"}
            ok = requests.post(url, json=patient_view_request(), timeout=30, headers=bearer)
            refused = requests.post(
                url,
                json=patient_view_request(),
                timeout=30,
                headers={"Authorization": f"Bearer {wrong}"},
            )
    finally:
        dispose(app)
    assert ok.status_code == 200 and refused.status_code == 401


def test_replay_store_down_is_503_not_500(secured, ec_key, monkeypatch):
    """If the jti store cannot be written the call is refused with 503, never accepted unchecked."""
    from sqlalchemy.exc import OperationalError

    def database_down(*_args, **_kwargs):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    guard = secured.extensions["cds_runtime"].verifier.replay_guard
    monkeypatch.setattr(guard, "claim", database_down)
    response = post_hook(secured, minter().sign(ec_key))
    assert response.status_code == 503
    assert response.get_json()["error"] == "authentication unavailable"


def _refreshers():
    import threading

    return {t for t in threading.enumerate() if t.name.startswith("jwks-refresh")}


def test_black_holed_jwks_does_not_delay_hook_calls(settings, clock, ec_key, rsa_key):
    """Over the app: while the issuer's JWKS is black-holed and a refresh hangs on it, hook
    calls with a known kid are answered promptly and an unknown kid gets 401 within a bounded
    wait; closing the app stops the refresher thread."""
    from .hostile_jwks import HostileJwks

    before = _refreshers()
    with HostileJwks() as jwks:
        jwks.keys = [ec_key.public_jwk(), rsa_key.public_jwk()]
        app = create_app(
            with_settings(settings, auth=True, jwt_issuers={ISSUER: jwks.url}, public_url=PUBLIC),
            clock=clock,
        )
        runtime = app.extensions["cds_runtime"]
        # The app's own verifier fetches once at start-up, in the background: wait for that fetch
        # (whether it lands before close() was a race on a busy machine), then count from there.
        deadline = time.monotonic() + 20
        while jwks.requests < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert jwks.requests == 1
        # The app's verifier, but with no cooldown, so that the next unknown kid hits the attack.
        runtime.verifier.close()
        runtime.verifier = JwtVerifier(
            JwtPolicy(issuers={ISSUER: jwks.url}, jwks_refresh_cooldown_seconds=0),
            runtime.verifier.replay_guard,
        )
        try:
            assert post_hook(app, minter().sign(ec_key)).status_code == 200
            jwks.mode = "blackhole"
            started = time.monotonic()
            assert post_hook(app, minter().sign(ec_key, kid="unknown")).status_code == 401
            assert time.monotonic() - started < 3
            deadline = time.monotonic() + 20
            while jwks.requests < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert jwks.requests == 3  # the refresh now hangs on the black hole
            for key in (ec_key, rsa_key) * 3:
                started = time.monotonic()
                assert post_hook(app, minter().sign(key)).status_code == 200
                assert time.monotonic() - started < 2
            assert _refreshers() - before
        finally:
            dispose(app)
        assert not (_refreshers() - before)


# --- issue 11 item 7: the verified issuer may only name its own FHIR servers -----------------


@pytest.fixture
def fhir_base(httpserver_ipv4):
    """A FHIR server on loopback answering empty Bundles to everything."""
    httpserver_ipv4.expect_request(re.compile("/fhir/.*")).respond_with_json(
        {"resourceType": "Bundle", "type": "searchset", "entry": []}
    )
    return httpserver_ipv4.url_for("/fhir")


def fetching_request(fhir_server: str) -> dict:
    request = patient_view_request()
    del request["prefetch"]["conditions"]
    request["fhirServer"] = fhir_server
    request["fhirAuthorization"] = {"access_token": "fhir-token", "token_type": "Bearer"}
    request["fhirAuthorization"].update(expires_in=300, scope="user/*.read", subject="cds")
    return request


@pytest.mark.parametrize("listed", [True, False])
def test_fhir_server_must_be_on_the_issuers_allow_list(
    settings, clock, trusted_jwks, ec_key, fhir_base, httpserver_ipv4, fetch_causes, listed
):
    """With auth on, a fhirServer outside CDS_FHIR_ORIGINS[iss] is never contacted: 412
    'unavailable', and the log says 'origin not allowed'."""
    elsewhere = "http://127.0.0.1:9/fhir"
    app = create_app(
        with_settings(
            settings,
            auth=True,
            jwt_issuers={ISSUER: trusted_jwks.url},
            public_url=PUBLIC,
            fhir_origins={ISSUER: (fhir_base if listed else elsewhere,)},
        ),
        clock=clock,
    )
    try:
        response = app.test_client().post(
            f"/cds-services/{FOOTDROP}",
            json=fetching_request(fhir_base),
            headers={"Authorization": f"Bearer {minter().sign(ec_key)}"},
        )
    finally:
        dispose(app)
    fetched = [r for r, _ in httpserver_ipv4.log if r.path.startswith("/fhir/")]
    if listed:
        assert response.status_code == 200, response.get_json()
        assert len(fetched) == 1
    else:
        assert response.status_code == 412
        assert response.get_json()["details"] == ["conditions: unavailable"]
        assert fetch_causes[-1] == {"conditions": "origin not allowed"}
        assert fetched == []


def test_wrong_audience_logs_expected_and_received_audience_never_the_token(
    secured, ec_key, caplog
):
    """A token for another host is 401; the log names both audiences and not the token."""
    wrong = "http://localhost:8080/cds-services/" + FOOTDROP
    token = minter(wrong).sign(ec_key)
    with caplog.at_level("WARNING", logger="cds_service"):
        response = post_hook(secured, token)
    assert response.status_code == 401
    assert wrong not in response.get_data(as_text=True)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "auth"]
    reason = record.reason  # type: ignore[attr-defined]
    assert f"aud {wrong!r}" in reason
    assert f"expected {HOOK_AUD!r}" in reason and "CDS_PUBLIC_URL" in reason
    for part in token.split("."):
        assert part not in caplog.text


SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"


def test_locally_served_jwks_with_the_announced_jku_is_accepted(
    settings, clock, trusted_jwks, ec_key
):
    """Keys served locally, CDS_JWT_JKU naming the jku the tokens carry: accepted; others not."""
    app = create_app(
        with_settings(
            settings,
            auth=True,
            jwt_issuers={ISSUER: trusted_jwks.url},
            jwt_jku={ISSUER: SANDBOX_JKU},
            public_url=PUBLIC,
        ),
        clock=clock,
    )
    try:
        assert post_hook(app, minter().sign(ec_key, jku=SANDBOX_JKU)).status_code == 200
        assert post_hook(app, minter().sign(ec_key, jku=trusted_jwks.url)).status_code == 200
        other = "https://elsewhere.example.org/jwks.json"
        assert post_hook(app, minter().sign(ec_key, jku=other)).status_code == 401
    finally:
        dispose(app)


def test_jku_for_an_untrusted_issuer_is_one_setting_error():
    """CDS_JWT_JKU naming an issuer absent from CDS_JWT_ISSUERS is refused at start-up."""
    from cds_service.config import Settings, SettingsError

    env = {
        "CDS_AUTH": "on",
        "CDS_JWT_ISSUERS": '{"https://ehr.example.org": "https://ehr.example.org/jwks"}',
        "CDS_JWT_JKU": f'{{"https://other.example.org": "{SANDBOX_JKU}"}}',
    }
    with pytest.raises(SettingsError, match="CDS_JWT_JKU"):
        Settings.from_env(env)
    env["CDS_JWT_JKU"] = f'{{"https://ehr.example.org": "{SANDBOX_JKU}"}}'
    assert Settings.from_env(env).jwt_jku == {"https://ehr.example.org": SANDBOX_JKU}
