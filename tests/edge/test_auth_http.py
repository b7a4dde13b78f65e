"""Caller authentication through the app: real signed JWTs, a real JWKS server on loopback."""

from __future__ import annotations

import time

import pytest
import requests

from cds_service import create_app
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
