"""Caller authentication: JWT verification against trusted JWK Sets, and replay protection.

Tokens are really signed (EC P-384, RSA 2048/3072) and JWK Sets are really fetched over loopback
HTTP; see ``conftest.py`` for the keys, servers and the ``TokenMinter``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm
from pytest_httpserver import HTTPServer

from cds_service.edge.jwt_auth import AuthenticationError, Claims, JwtPolicy, JwtVerifier
from cds_service.edge.replay_guard import ReplayGuard, SqlReplayGuard, jwt_replay_table

from .conftest import (
    AUDIENCE,
    ISSUER,
    JWKS_PATH,
    NOW,
    FakeClock,
    JwksEndpoint,
    SigningKey,
    TokenMinter,
)

MakeVerifier = Callable[..., JwtVerifier]
#: Issuer used by the PostgreSQL tests; unique per run so that only our rows are removed.
PG_ISSUER = f"https://pg-test-{uuid.uuid4()}.example.org"


def accept(verifier: JwtVerifier, token: str, audience: str = AUDIENCE) -> Claims:
    return verifier.verify(TokenMinter.bearer(token), audience)


def refuse(verifier: JwtVerifier, authorization: str | None, audience: str = AUDIENCE) -> str:
    """Assert the header is refused; return the log reason (checked not to leak the token)."""
    with pytest.raises(AuthenticationError) as caught:
        verifier.verify(authorization, audience)
    reason = caught.value.reason
    assert reason and str(caught.value) == reason
    parts = (authorization or "").split()
    if len(parts) >= 2:
        token = parts[1]
        assert token not in reason
        for segment in token.split("."):
            assert len(segment) < 12 or segment not in reason
    return reason


def refuse_token(verifier: JwtVerifier, token: str, audience: str = AUDIENCE) -> str:
    return refuse(verifier, TokenMinter.bearer(token), audience)


def rows_in(engine: sa.Engine) -> list[tuple[str, str, float]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(sa.select(jwt_replay_table))]


def claim_concurrently(guards: list[SqlReplayGuard], issuer: str, jti: str) -> list[bool]:
    """Let every guard (one per simulated worker) claim the same pair at the same moment."""
    barrier = threading.Barrier(len(guards))
    results: list[bool] = []

    def worker(guard: SqlReplayGuard) -> None:
        barrier.wait()
        results.append(guard.claim(issuer, jti, NOW + 60))

    threads = [threading.Thread(target=worker, args=(guard,)) for guard in guards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- accepted tokens ---------------------------------------------------------------------------


def test_es384_token_from_trusted_issuer_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A correctly signed ES384 token yields its iss, jti, exp and (absent) tenant."""
    claims = mint.claims(jti="jti-es384")
    assert accept(verifier, mint.sign(ec_key, claims)) == Claims(
        iss=ISSUER, jti="jti-es384", exp=NOW + 300, tenant=None
    )


def test_rs384_token_with_rsa_2048_key_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, rsa_key: SigningKey
) -> None:
    """A correctly signed RS384 token under a 2048-bit RSA key is accepted."""
    assert accept(verifier, mint.sign(rsa_key)).iss == ISSUER


def test_rs384_token_with_rsa_3072_key_is_accepted(
    make_verifier: MakeVerifier,
    trusted_jwks: JwksEndpoint,
    mint: TokenMinter,
    rsa3072_key: SigningKey,
) -> None:
    """A correctly signed RS384 token under a 3072-bit RSA key is accepted."""
    trusted_jwks.publish(rsa3072_key)
    assert accept(make_verifier(), mint.sign(rsa3072_key)).iss == ISSUER


def test_token_encoded_by_pyjwt_like_a_client_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token produced by plain ``jwt.encode`` with the sandbox's header fields is accepted."""
    token = jwt.encode(
        mint.claims(),
        ec_key.private_key,
        algorithm="ES384",
        headers={"kid": ec_key.kid, "jku": verifier.policy.issuers[ISSUER]},
    )
    assert jwt.get_unverified_header(token)["typ"] == "JWT"
    assert accept(verifier, token).iss == ISSUER


def test_aud_array_containing_the_endpoint_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """An ``aud`` array is accepted when one of its members is the endpoint URL."""
    token = mint.sign(ec_key, mint.claims(aud=["https://other.example.org/x", AUDIENCE]))
    assert accept(verifier, token).iss == ISSUER


def test_tenant_claim_is_returned(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """The optional ``tenant`` claim is passed through to the caller of ``verify``."""
    assert accept(verifier, mint.sign(ec_key, mint.claims(tenant="hospital-7"))).tenant == (
        "hospital-7"
    )


def test_jku_equal_to_the_configured_jwks_url_is_accepted(
    verifier: JwtVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A ``jku`` header naming exactly the issuer's configured JWKS URL is honoured."""
    assert accept(verifier, mint.sign(ec_key, jku=trusted_jwks.url)).iss == ISSUER


@pytest.mark.parametrize("typ", ["JWT", "jwt", "Jwt", "application/jwt"])
def test_typ_jwt_is_accepted_case_insensitively(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, typ: str
) -> None:
    """``typ`` is accepted when it is JWT in any case (or its full media type)."""
    assert accept(verifier, mint.sign(ec_key, typ=typ)).iss == ISSUER


def test_missing_typ_is_accepted_by_default(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token without ``typ`` is accepted under the default policy (documented decision)."""
    assert accept(verifier, mint.sign(ec_key, typ=None)).iss == ISSUER


def test_rsa_jwk_without_alg_member_still_verifies_rs384(
    make_verifier: MakeVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter, rsa_key: SigningKey
) -> None:
    """An RSA JWK declaring no ``alg`` verifies RS384 (PyJWT alone would assume RS256)."""
    trusted_jwks.keys.clear()
    trusted_jwks.publish(rsa_key, declare_alg=False)
    assert accept(make_verifier(), mint.sign(rsa_key)).iss == ISSUER


def test_bearer_scheme_is_case_insensitive(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """The auth scheme is matched case-insensitively (RFC 9110 §11.1)."""
    assert verifier.verify(f"bearer {mint.sign(ec_key)}", AUDIENCE).iss == ISSUER


def test_expiry_within_leeway_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token that expired less than ``leeway_seconds`` ago is still accepted."""
    token = mint.sign(ec_key, mint.claims(iat=NOW - 300, exp=NOW - 29))
    assert accept(verifier, token).exp == NOW - 29


def test_lifetime_equal_to_the_maximum_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token living exactly ``max_lifetime_seconds`` is accepted."""
    assert accept(verifier, mint.sign(ec_key, mint.claims(exp=NOW + 3600))).exp == NOW + 3600


def test_jwks_is_fetched_once_and_cached(
    verifier: JwtVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Several verifications for one issuer cause a single JWKS fetch."""
    for _ in range(3):
        accept(verifier, mint.sign(ec_key))
    assert trusted_jwks.requests == 1


# --- algorithm attacks -------------------------------------------------------------------------


def test_alg_none_is_refused(verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey) -> None:
    """An unsigned ``alg: none`` token naming a trusted kid is refused."""
    assert "alg" in refuse_token(verifier, mint.unsigned(ec_key))


def test_hs256_keyed_with_the_public_key_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    """HS256 tokens MACed with the trusted public key's PEM (key confusion) are refused."""
    for key in (ec_key, rsa_key):
        assert "alg" in refuse_token(verifier, mint.hmac_with_public_key(key))


def test_asymmetric_alg_outside_the_allow_list_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, rsa_key: SigningKey
) -> None:
    """A validly signed RS256 token is refused when only ES384 and RS384 are configured."""
    assert "alg" in refuse_token(verifier, mint.sign(rsa_key, alg="RS256"))


def test_alg_other_than_the_jwk_declares_is_refused(
    make_verifier: MakeVerifier, mint: TokenMinter, rsa_key: SigningKey
) -> None:
    """A token whose alg differs from the ``alg`` its JWK declares is refused, even if allowed."""
    verifier = make_verifier(algorithms=("RS256", "RS384"))
    assert "key's alg" in refuse_token(verifier, mint.sign(rsa_key, alg="RS256"))


def test_kid_of_a_key_of_another_type_is_refused(
    make_verifier: MakeVerifier,
    trusted_jwks: JwksEndpoint,
    mint: TokenMinter,
    ec_key: SigningKey,
    rsa_key: SigningKey,
) -> None:
    """An ES384 token whose kid names an RSA key is an authentication failure, not a crash."""
    trusted_jwks.keys.clear()
    trusted_jwks.publish(rsa_key, declare_alg=False)
    token = mint.sign(ec_key, kid=rsa_key.kid)
    assert "key type" in refuse_token(make_verifier(), token)


def test_ec_key_on_the_wrong_curve_is_refused(
    make_verifier: MakeVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter
) -> None:
    """An ES384 token verified by a P-256 JWK (no declared alg) is refused."""
    p256 = SigningKey("ec-p256", "ES384", ec.generate_private_key(ec.SECP256R1()))
    trusted_jwks.publish(p256, declare_alg=False)
    sha384_any_curve = ECAlgorithm(ECAlgorithm.SHA384)
    token = mint.sign(p256, signer=sha384_any_curve)
    assert "InvalidKeyError" in refuse_token(make_verifier(), token)


def test_rsa_key_shorter_than_2048_bits_is_refused(
    make_verifier: MakeVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter
) -> None:
    """A token signed with a 1024-bit RSA key from the trusted JWKS is refused."""
    weak = SigningKey("rsa-1024", "RS384", rsa.generate_private_key(65537, 1024))
    trusted_jwks.publish(weak)
    assert "InvalidKeyError" in refuse_token(make_verifier(), mint.sign(weak))


# --- issuer, key selection and signature -------------------------------------------------------


def test_tampered_payload_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Changing the payload of a validly signed token invalidates it."""
    token = mint.sign(ec_key, mint.claims(tenant="hospital-7"))
    forged = mint.with_payload(token, mint.claims(tenant="hospital-8"))
    assert "signature" in refuse_token(verifier, forged)


def test_foreign_key_using_the_trusted_kid_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, attacker_key: SigningKey
) -> None:
    """A token signed by an untrusted key but labelled with the trusted kid is refused."""
    token = mint.sign(attacker_key.with_kid(ec_key.kid))
    assert "signature" in refuse_token(verifier, token)


def test_untrusted_issuer_is_refused_without_fetching_anything(
    verifier: JwtVerifier, trusted_jwks: JwksEndpoint, ec_key: SigningKey
) -> None:
    """A token whose ``iss`` is not configured is refused before any JWKS request."""
    token = TokenMinter(issuer="https://evil.example.org").sign(ec_key)
    assert "untrusted iss" in refuse_token(verifier, token)
    assert trusted_jwks.requests == 0


def test_unknown_kid_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, attacker_key: SigningKey
) -> None:
    """A kid absent from the issuer's JWKS is refused."""
    assert "kid unknown" in refuse_token(verifier, mint.sign(attacker_key))


def test_missing_kid_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token without a ``kid`` header is refused."""
    assert "kid" in refuse_token(verifier, mint.sign(ec_key, kid=None))


def test_attacker_jku_is_refused_and_never_fetched(
    verifier: JwtVerifier,
    trusted_jwks: JwksEndpoint,
    attacker_jwks: JwksEndpoint,
    mint: TokenMinter,
    attacker_key: SigningKey,
    ec_key: SigningKey,
) -> None:
    """A ``jku`` other than the issuer's configured URL is refused and never requested."""
    own_kid = mint.sign(attacker_key, jku=attacker_jwks.url)
    trusted_kid = mint.sign(attacker_key.with_kid(ec_key.kid), jku=attacker_jwks.url)
    for token in (own_kid, trusted_kid):
        assert "jku" in refuse_token(verifier, token)
    assert attacker_jwks.requests == 0
    assert trusted_jwks.requests == 0


@pytest.mark.parametrize("typ", ["at+jwt", "JWS", "JOSE", "", 1])
def test_typ_other_than_jwt_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, typ: object
) -> None:
    """A ``typ`` header that is present but not JWT is refused."""
    assert "typ" in refuse_token(verifier, mint.sign(ec_key, typ=typ))


def test_missing_typ_is_refused_when_the_policy_requires_it(
    make_verifier: MakeVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """With ``require_typ=True`` a token without ``typ`` is refused."""
    verifier = make_verifier(require_typ=True)
    assert "typ" in refuse_token(verifier, mint.sign(ec_key, typ=None))
    assert accept(verifier, mint.sign(ec_key)).iss == ISSUER


# --- claims ------------------------------------------------------------------------------------


def test_expired_token_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token whose ``exp`` passed more than the leeway ago is refused."""
    token = mint.sign(ec_key, mint.claims(iat=NOW - 300, exp=NOW - 30))
    assert "expired" in refuse_token(verifier, token)


def test_iat_in_the_future_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token issued more than the leeway in the future is refused."""
    token = mint.sign(ec_key, mint.claims(iat=NOW + 31, exp=NOW + 300))
    assert "iat" in refuse_token(verifier, token)


def test_iat_slightly_in_the_future_is_accepted(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Clock skew up to the leeway on ``iat`` is tolerated."""
    assert accept(verifier, mint.sign(ec_key, mint.claims(iat=NOW + 30))).iss == ISSUER


def test_nbf_in_the_future_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token with an ``nbf`` beyond the leeway is refused."""
    assert "nbf" in refuse_token(verifier, mint.sign(ec_key, mint.claims(nbf=NOW + 60)))


def test_wrong_aud_is_refused(verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey) -> None:
    """A token for another endpoint (here: discovery) is refused."""
    token = mint.sign(ec_key, mint.claims(aud="https://cds.example.org/cds-services"))
    assert "aud" in refuse_token(verifier, token)


def test_aud_array_without_the_endpoint_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """An ``aud`` array none of whose members is the endpoint is refused."""
    token = mint.sign(ec_key, mint.claims(aud=["https://a.example.org", AUDIENCE + "/feedback"]))
    assert "aud" in refuse_token(verifier, token)


@pytest.mark.parametrize("claim", ["exp", "iat", "jti", "aud"])
def test_missing_required_claim_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, claim: str
) -> None:
    """Each of ``exp``, ``iat``, ``jti`` and ``aud`` is required."""
    token = mint.sign(ec_key, mint.claims(**{claim: None}))
    assert claim in refuse_token(verifier, token)


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "tomorrow"), ("iat", True), ("exp", [NOW]), ("jti", 42), ("jti", "")],
)
def test_malformed_claim_values_are_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, claim: str, value: object
) -> None:
    """Non-numeric dates and non-string or empty ``jti`` values are refused."""
    refuse_token(verifier, mint.sign(ec_key, mint.claims(**{claim: value})))


def test_lifetime_longer_than_the_maximum_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token whose ``exp - iat`` exceeds ``max_lifetime_seconds`` is refused."""
    token = mint.sign(ec_key, mint.claims(exp=NOW + 3601))
    assert "lifetime" in refuse_token(verifier, token)


def test_configured_maximum_lifetime_is_applied(
    make_verifier: MakeVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A stricter ``max_lifetime_seconds`` refuses the sandbox's 300-second tokens."""
    verifier = make_verifier(max_lifetime_seconds=120)
    assert "lifetime" in refuse_token(verifier, mint.sign(ec_key))


def test_exp_not_after_iat_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token whose ``exp`` is not later than its ``iat`` is refused."""
    token = mint.sign(ec_key, mint.claims(iat=NOW, exp=NOW))
    assert "exp is not after iat" in refuse_token(verifier, token)


def test_non_string_tenant_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A ``tenant`` claim that is not a string is refused."""
    assert "tenant" in refuse_token(verifier, mint.sign(ec_key, mint.claims(tenant={"id": 7})))


# --- the Authorization header ------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNzd29yZA==",
        "Token aaaa.bbbb.cccc",
        "Bearer not-a-jwt",
        "Bearer aaaa.bbbb",
        "Bearer aaaa.bbbb.cccc.dddd",
        "Bearer aaaa.bbbb.cccc extra",
        "Bearer aaaa.bbbb.cc+c",
        "Bearer aaaa.bbbb.cccc",  # right shape, but the segments are not JSON
        "Bearer eyJhbGciOiJFUzM4NCJ9.bm90IGpzb24.c2ln",  # header ok, payload not JSON
        "Bearer WyJFUzM4NCJd.e30.c2ln",  # header is a JSON array
    ],
    ids=repr,
)
def test_missing_or_garbled_authorization_is_refused(
    verifier: JwtVerifier, trusted_jwks: JwksEndpoint, authorization: str | None
) -> None:
    """Absent, non-Bearer or unparseable Authorization headers are refused without network I/O."""
    refuse(verifier, authorization)
    assert trusted_jwks.requests == 0


def test_valid_token_after_another_scheme_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A valid JWT presented under a scheme other than Bearer is refused."""
    assert "Bearer" in refuse(verifier, f"JWT {mint.sign(ec_key)}")


def test_oversized_token_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """A token larger than the size cap is refused before it is parsed."""
    token = mint.sign(ec_key, mint.claims(padding="x" * 10_000))
    assert "too long" in refuse_token(verifier, token)


def test_empty_audience_is_a_programming_error(verifier: JwtVerifier) -> None:
    """Calling ``verify`` without an expected audience raises ValueError, not a 401."""
    with pytest.raises(ValueError, match="audience"):
        verifier.verify("Bearer aaaa.bbbb.cccc", "")


# --- JWKS availability -------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback socket that accepts connections (via the backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}{JWKS_PATH}"


def test_jwks_server_down_is_an_authentication_error(
    make_verifier: MakeVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Connection refused on the JWKS URL yields AuthenticationError, not a transport error."""
    verifier = make_verifier(issuers={ISSUER: f"http://127.0.0.1:{_closed_port()}{JWKS_PATH}"})
    assert "unreachable" in refuse_token(verifier, mint.sign(ec_key))


def test_jwks_timeout_is_an_authentication_error(
    make_verifier: MakeVerifier, silent_server: str, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """With no key set yet, a JWKS server that never answers fails the call promptly."""
    verifier = make_verifier(issuers={ISSUER: silent_server}, jwks_timeout_seconds=0.2)
    started = time.monotonic()
    assert "unreachable" in refuse_token(verifier, mint.sign(ec_key))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (500, "oops", "text/plain"),
        (404, "", "text/plain"),
        (200, "<html>not json</html>", "text/html"),
        (200, '["not", "an", "object"]', "application/json"),
        (200, '{"keys": []}', "application/json"),
        (200, '{"keys": [{"kty": "nonsense", "kid": "ec-p384-1"}]}', "application/json"),
    ],
)
def test_unusable_jwks_response_is_an_authentication_error(
    make_verifier: MakeVerifier,
    httpserver: HTTPServer,
    mint: TokenMinter,
    ec_key: SigningKey,
    status: int,
    body: str,
    content_type: str,
) -> None:
    """Error statuses and malformed JWK Sets yield AuthenticationError."""
    httpserver.expect_request("/broken-jwks").respond_with_data(
        body, status=status, content_type=content_type
    )
    verifier = make_verifier(issuers={ISSUER: httpserver.url_for("/broken-jwks")})
    refuse_token(verifier, mint.sign(ec_key))


def test_jwks_redirect_is_not_followed(
    make_verifier: MakeVerifier,
    httpserver: HTTPServer,
    attacker_jwks: JwksEndpoint,
    mint: TokenMinter,
    attacker_key: SigningKey,
) -> None:
    """A redirect from the trusted JWKS URL to another server is not followed."""
    httpserver.expect_request("/moved").respond_with_data(
        "", status=302, headers={"Location": attacker_jwks.url}
    )
    verifier = make_verifier(issuers={ISSUER: httpserver.url_for("/moved")})
    refuse_token(verifier, mint.sign(attacker_key))
    assert attacker_jwks.requests == 0


# --- key rotation ------------------------------------------------------------------------------


def test_new_kid_appearing_in_the_jwks_is_fetched(
    make_verifier: MakeVerifier,
    trusted_jwks: JwksEndpoint,
    mint: TokenMinter,
    ec_key: SigningKey,
    rotated_key: SigningKey,
) -> None:
    """After the client publishes a new key, a token with its kid triggers a refetch and passes."""
    verifier = make_verifier(jwks_refresh_cooldown_seconds=0)
    accept(verifier, mint.sign(ec_key))
    assert "kid unknown" in refuse_token(verifier, mint.sign(rotated_key))
    trusted_jwks.publish(rotated_key)
    fetches_before = trusted_jwks.requests
    assert accept(verifier, mint.sign(rotated_key)).iss == ISSUER
    assert trusted_jwks.requests == fetches_before + 1


def test_unknown_kids_do_not_trigger_refetches_during_the_cooldown(
    verifier: JwtVerifier, trusted_jwks: JwksEndpoint, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Random kids cannot make the service hammer the client's JWKS endpoint."""
    accept(verifier, mint.sign(ec_key))
    for n in range(5):
        refuse_token(verifier, mint.sign(ec_key, kid=f"random-{n}"))
    assert trusted_jwks.requests == 1


# --- replay protection -------------------------------------------------------------------------


def test_replayed_jti_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """The same token presented twice is refused the second time."""
    token = mint.sign(ec_key)
    accept(verifier, token)
    assert "replayed" in refuse_token(verifier, token)


def test_jti_reused_in_a_new_token_is_refused(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    """A fresh token reusing an earlier token's jti from the same issuer is refused."""
    accept(verifier, mint.sign(ec_key, mint.claims(jti="nonce-1")))
    assert "replayed" in refuse_token(verifier, mint.sign(rsa_key, mint.claims(jti="nonce-1")))


def test_replay_is_detected_across_workers_sharing_the_database(
    make_verifier: MakeVerifier,
    sqlite_engines: Callable[[], sa.Engine],
    mint: TokenMinter,
    ec_key: SigningKey,
) -> None:
    """A token accepted by one worker is refused by another using its own engine on the same DB."""
    worker_a = make_verifier(guard=SqlReplayGuard(sqlite_engines()))
    worker_b = make_verifier(guard=SqlReplayGuard(sqlite_engines()))
    token = mint.sign(ec_key)
    accept(worker_a, token)
    assert "replayed" in refuse_token(worker_b, token)


def test_refused_token_does_not_consume_its_jti(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey, attacker_key: SigningKey
) -> None:
    """Only fully verified tokens record their jti, so forgeries cannot burn a client's nonce."""
    forged = mint.sign(attacker_key.with_kid(ec_key.kid), mint.claims(jti="nonce-2"))
    refuse_token(verifier, forged)
    refuse_token(verifier, mint.sign(ec_key, mint.claims(jti="nonce-2", aud="https://x.org")))
    assert accept(verifier, mint.sign(ec_key, mint.claims(jti="nonce-2"))).jti == "nonce-2"


def test_replay_entry_is_kept_until_exp_plus_leeway(
    verifier: JwtVerifier,
    sqlite_engines: Callable[[], sa.Engine],
    mint: TokenMinter,
    ec_key: SigningKey,
) -> None:
    """The verifier asks the guard to remember the jti until the token's exp plus the leeway."""
    accept(verifier, mint.sign(ec_key, mint.claims(jti="nonce-3")))
    assert rows_in(sqlite_engines()) == [(ISSUER, "nonce-3", float(NOW + 300 + 30))]


def test_sql_replay_guard_satisfies_the_protocol(replay_guard: SqlReplayGuard) -> None:
    """SqlReplayGuard is a structural ReplayGuard."""
    assert isinstance(replay_guard, ReplayGuard)


def test_guard_claims_once_per_issuer_and_jti(replay_guard: SqlReplayGuard) -> None:
    """A pair is granted once; the same jti under another issuer is a different pair."""
    assert replay_guard.claim("https://a.example.org", "n", NOW + 60) is True
    assert replay_guard.claim("https://a.example.org", "n", NOW + 60) is False
    assert replay_guard.claim("https://b.example.org", "n", NOW + 60) is True


def test_guard_purges_expired_entries(sqlite_engines: Callable[[], sa.Engine]) -> None:
    """Expired rows are deleted opportunistically during later claims."""
    clock = FakeClock(NOW)
    engine = sqlite_engines()
    guard = SqlReplayGuard(engine, clock=clock, purge_interval_seconds=60)
    assert guard.claim(ISSUER, "old", NOW + 10)
    assert guard.claim(ISSUER, "long-lived", NOW + 3600)
    clock.now = NOW + 61
    assert guard.claim(ISSUER, "new", NOW + 400)
    assert sorted(jti for _, jti, _ in rows_in(engine)) == ["long-lived", "new"]


def test_guard_purge_is_rate_limited(sqlite_engines: Callable[[], sa.Engine]) -> None:
    """Between purge intervals claims do not delete, and purge_expired() does it on demand."""
    clock = FakeClock(NOW)
    engine = sqlite_engines()
    guard = SqlReplayGuard(engine, clock=clock, purge_interval_seconds=60)
    assert guard.claim(ISSUER, "old", NOW + 10)
    clock.now = NOW + 20
    assert guard.claim(ISSUER, "new", NOW + 400)
    assert len(rows_in(engine)) == 2
    assert guard.purge_expired() == 1
    assert [jti for _, jti, _ in rows_in(engine)] == ["new"]


def test_guard_lets_an_expired_unpurged_entry_be_claimed_again(
    sqlite_engines: Callable[[], sa.Engine],
) -> None:
    """A jti whose previous entry has expired (but is not yet purged) may be claimed anew."""
    clock = FakeClock(NOW)
    guard = SqlReplayGuard(sqlite_engines(), clock=clock, purge_interval_seconds=3600)
    assert guard.claim(ISSUER, "n", NOW + 10)
    clock.now = NOW + 10
    assert guard.claim(ISSUER, "n", NOW + 100) is True
    assert guard.claim(ISSUER, "n", NOW + 100) is False


def test_guard_grants_a_pair_to_exactly_one_of_many_concurrent_workers(
    sqlite_engines: Callable[[], sa.Engine],
) -> None:
    """Concurrent claims of one pair through separate engines succeed exactly once."""
    guards = [SqlReplayGuard(sqlite_engines(), clock=FakeClock()) for _ in range(6)]
    assert sorted(claim_concurrently(guards, ISSUER, "contested")) == [False] * 5 + [True]


@pytest.mark.parametrize(
    ("issuer", "jti"), [("", "n"), (ISSUER, ""), (ISSUER, "j" * 256), ("i" * 256, "n")]
)
def test_guard_rejects_empty_or_oversized_keys(
    replay_guard: SqlReplayGuard, issuer: str, jti: str
) -> None:
    """Empty or over-long issuer/jti values are a ValueError rather than a silent DB error."""
    with pytest.raises(ValueError):
        replay_guard.claim(issuer, jti, NOW + 60)


@pytest.fixture
def postgres_engines() -> Iterator[Callable[[], sa.Engine]]:
    """Engines on the PostgreSQL named by FOOTDROP_TEST_POSTGRES_URL (rows of this test removed)."""
    url = os.environ.get("FOOTDROP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("FOOTDROP_TEST_POSTGRES_URL is not set")
    engines: list[sa.Engine] = []

    def make() -> sa.Engine:
        engine = sa.create_engine(url)
        engines.append(engine)
        return engine

    yield make
    if engines:
        with engines[0].begin() as conn:
            conn.execute(jwt_replay_table.delete().where(jwt_replay_table.c.iss == PG_ISSUER))
    for engine in engines:
        engine.dispose()


@pytest.mark.postgres
def test_guard_on_postgresql_detects_replay_across_engines_and_purges(
    postgres_engines: Callable[[], sa.Engine],
) -> None:
    """On PostgreSQL the guard grants a pair once across engines, reclaims and purges expiry."""
    clock = FakeClock(NOW)
    worker_a = SqlReplayGuard(postgres_engines(), clock=clock, purge_interval_seconds=3600)
    worker_b = SqlReplayGuard(postgres_engines(), clock=clock, purge_interval_seconds=3600)
    assert worker_a.claim(PG_ISSUER, "n1", NOW + 10) is True
    assert worker_b.claim(PG_ISSUER, "n1", NOW + 10) is False
    assert worker_b.claim(PG_ISSUER, "n2", NOW + 1000) is True
    clock.now = NOW + 10
    assert worker_b.claim(PG_ISSUER, "n1", NOW + 100) is True  # expired entry taken over
    assert worker_a.claim(PG_ISSUER, "n1", NOW + 100) is False
    clock.now = NOW + 500
    assert worker_a.purge_expired() >= 1
    with postgres_engines().connect() as conn:
        left = conn.execute(
            sa.select(jwt_replay_table.c.jti).where(jwt_replay_table.c.iss == PG_ISSUER)
        )
        assert [row.jti for row in left] == ["n2"]


@pytest.mark.postgres
def test_guard_on_postgresql_grants_a_contested_pair_once(
    postgres_engines: Callable[[], sa.Engine],
) -> None:
    """Concurrent claims of one pair on PostgreSQL succeed exactly once."""
    guards = [SqlReplayGuard(postgres_engines(), clock=FakeClock()) for _ in range(6)]
    assert sorted(claim_concurrently(guards, PG_ISSUER, "contested")) == [False] * 5 + [True]


# --- policy validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithms",
    [("none",), ("NONE",), ("HS256",), ("ES384", "HS512"), ("XS999",), ("ES384K",), ()],
    ids=repr,
)
def test_policy_refuses_unsafe_or_unknown_algorithms(algorithms: tuple[str, ...]) -> None:
    """Configuring ``none``, an HMAC, an unknown algorithm or none at all is a ValueError."""
    with pytest.raises(ValueError, match="algorithms"):
        JwtPolicy(issuers={ISSUER: "https://ehr.example.org/jwks"}, algorithms=algorithms)


@pytest.mark.parametrize(
    "url",
    [
        "http://ehr.example.org/jwks",
        "http://10.0.0.5/jwks",
        "file:///etc/passwd",
        "ftp://ehr.example.org/jwks",
        "/jwks",
        "https://user:pw@ehr.example.org/jwks",
        "",
    ],
)
def test_policy_refuses_insecure_or_odd_jwks_urls(url: str) -> None:
    """JWKS URLs must be https (or loopback http) absolute URLs without credentials."""
    with pytest.raises(ValueError, match="JWKS URL"):
        JwtPolicy(issuers={ISSUER: url})


@pytest.mark.parametrize(
    "url",
    [
        "https://ehr.example.org/jwks",
        "http://localhost:8080/jwks",
        "http://127.0.0.1/jwks",
        "http://127.8.9.10/jwks",
        "http://[::1]:9000/jwks",
    ],
)
def test_policy_accepts_https_and_loopback_http(url: str) -> None:
    """https anywhere and plain http on loopback hosts are accepted."""
    assert JwtPolicy(issuers={ISSUER: url}).issuers[ISSUER] == url


def test_policy_allows_insecure_jwks_only_when_flagged() -> None:
    """``allow_insecure_jwks=True`` permits plain http to a non-loopback host."""
    policy = JwtPolicy(issuers={ISSUER: "http://jwks.internal/jwks"}, allow_insecure_jwks=True)
    assert policy.issuers[ISSUER] == "http://jwks.internal/jwks"


def test_policy_requires_at_least_one_issuer() -> None:
    """An empty issuer mapping is refused (auth on with nobody trusted is a misconfiguration)."""
    with pytest.raises(ValueError, match="issuer"):
        JwtPolicy(issuers={})


@pytest.mark.parametrize(
    "field",
    [
        {"leeway_seconds": -1},
        {"max_lifetime_seconds": 0},
        {"jwks_timeout_seconds": 0},
        {"jwks_timeout_seconds": float("inf")},
        {"jwks_cache_seconds": 0},
        {"jwks_refresh_cooldown_seconds": -5},
        {"jwks_max_stale_seconds": 0},
        {"jwks_wait_seconds": -1},
        {"jwks_max_bytes": 10},
        {"jwks_max_bytes": 300_000.5},
        {"jwks_max_bytes": True},
    ],
    ids=repr,
)
def test_policy_refuses_out_of_range_numbers(field: dict[str, float]) -> None:
    """Negative leeway, non-positive lifetimes/timeouts and infinite values are refused."""
    with pytest.raises(ValueError):
        JwtPolicy(issuers={ISSUER: "https://ehr.example.org/jwks"}, **field)


def test_policy_keeps_a_private_copy_of_the_issuers() -> None:
    """Mutating the mapping passed in does not change whom the policy trusts."""
    issuers = {ISSUER: "https://ehr.example.org/jwks"}
    policy = JwtPolicy(issuers=issuers)
    issuers["https://evil.example.org"] = "https://evil.example.org/jwks"
    assert list(policy.issuers) == [ISSUER]
    with pytest.raises(TypeError):
        policy.issuers["https://evil.example.org"] = "x"  # type: ignore[index]


def test_policy_defaults_follow_the_spec() -> None:
    """Defaults: ES384 and RS384, 30 s leeway, 1 h maximum lifetime, 2 s JWKS timeout."""
    policy = JwtPolicy(issuers={ISSUER: "https://ehr.example.org/jwks"})
    assert policy.algorithms == ("ES384", "RS384")
    assert (policy.leeway_seconds, policy.max_lifetime_seconds) == (30, 3600)
    assert policy.jwks_timeout_seconds == 2.0
    assert (policy.allow_insecure_jwks, policy.require_typ) == (False, False)


def test_policy_jwks_defaults_bound_refresh_staleness_size_and_waiting() -> None:
    """Defaults: refresh every 5 min, unknown-kid refetch at most every 10 s, last good keys
    serve for 24 h, JWKS at most 256 KiB, a request waits at most 1 s for a refresh."""
    policy = JwtPolicy(issuers={ISSUER: "https://ehr.example.org/jwks"})
    assert (policy.jwks_cache_seconds, policy.jwks_refresh_cooldown_seconds) == (300.0, 10.0)
    assert policy.jwks_max_stale_seconds == 24 * 3600
    assert (policy.jwks_max_bytes, policy.jwks_wait_seconds) == (256 * 1024, 1.0)


# --- log hygiene -------------------------------------------------------------------------------


def test_reasons_never_carry_claims_beyond_iss_kid_jti_and_a_refused_aud(
    verifier: JwtVerifier, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Failure reasons name iss/kid/jti, and aud only when aud is why (issue 13); never tenant."""
    secret_aud = "https://secret-aud.example.org/x"
    cases = [
        mint.claims(aud=secret_aud, tenant="secret-tenant"),
        mint.claims(aud=[AUDIENCE, secret_aud], exp=NOW - 600, iat=NOW - 900, tenant="t-secret"),
        mint.claims(exp=NOW + 7200, tenant="secret-tenant"),
    ]
    for index, claims in enumerate(cases):
        reason = refuse_token(verifier, mint.sign(ec_key, claims))
        assert "tenant" not in reason and "t-secret" not in reason
        assert ("secret-aud" in reason) == (index == 0), reason
        assert ec_key.kid in reason
