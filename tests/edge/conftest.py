"""Fixtures for the caller-authentication tests: real keys, real JWK Sets served over loopback
HTTP (pytest-httpserver; the verifier's refresher threads fetch them with requests, so nothing is
mocked), token minting and SQLite-backed replay guards; ``hostile_jwks.py`` serves hostile ones.

The verifier under test runs on a fixed clock (``NOW``); tokens are minted relative to it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import Algorithm, ECAlgorithm, RSAAlgorithm
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds_service.edge.jwt_auth import JwtPolicy, JwtVerifier
from cds_service.edge.replay_guard import SqlReplayGuard

#: The verifier's "current time" (POSIX seconds, 2030-03-17).
NOW = 1_900_000_000
ISSUER = "https://ehr.example.org"
AUDIENCE = "https://cds.example.org/cds-services/footdrop-after-im-injection"
JWKS_PATH = "/.well-known/jwks.json"


# --- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """A private key, the ``kid`` it is published under and the ``alg`` it signs with."""

    kid: str
    alg: str
    private_key: Any

    def with_kid(self, kid: str) -> SigningKey:
        return SigningKey(kid, self.alg, self.private_key)

    def public_jwk(self, *, declare_alg: bool = True) -> dict[str, Any]:
        public = self.private_key.public_key()
        codec = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        jwk = codec.to_jwk(public, as_dict=True)
        jwk.update(kid=self.kid, use="sig")
        if declare_alg:
            jwk["alg"] = self.alg
        return jwk

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _ec_p384(kid: str) -> SigningKey:
    return SigningKey(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def _rsa(kid: str, bits: int) -> SigningKey:
    return SigningKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=bits))


@pytest.fixture(scope="session")
def ec_key() -> SigningKey:
    return _ec_p384("ec-p384-1")


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    return _rsa("rsa-2048-1", 2048)


@pytest.fixture(scope="session")
def rsa3072_key() -> SigningKey:
    return _rsa("rsa-3072-1", 3072)


@pytest.fixture(scope="session")
def rotated_key() -> SigningKey:
    """A second EC key of the trusted client, not published until a test rotates it in."""
    return _ec_p384("ec-p384-2")


@pytest.fixture(scope="session")
def attacker_key() -> SigningKey:
    return _ec_p384("attacker-1")


# --- JWK Sets over HTTP ------------------------------------------------------------------------


class JwksEndpoint:
    """A JWK Set served at ``JWKS_PATH`` by a real HTTP server; its keys can change mid-test."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.keys: list[dict[str, Any]] = []
        server.expect_request(JWKS_PATH, method="GET").respond_with_handler(self._handle)

    def _handle(self, _request: Request) -> Response:
        body = json.dumps({"keys": self.keys})
        return Response(body, status=200, content_type="application/json")

    @property
    def url(self) -> str:
        return self.server.url_for(JWKS_PATH)

    def publish(self, *keys: SigningKey, declare_alg: bool = True) -> None:
        self.keys.extend(key.public_jwk(declare_alg=declare_alg) for key in keys)

    @property
    def requests(self) -> int:
        """How many requests (for any path) this server has received."""
        return len(self.server.log)


@pytest.fixture
def trusted_jwks(httpserver: HTTPServer, ec_key: SigningKey, rsa_key: SigningKey) -> JwksEndpoint:
    """The trusted client's JWK Set (EC P-384 and RSA-2048 keys) on http://localhost."""
    endpoint = JwksEndpoint(httpserver)
    endpoint.publish(ec_key, rsa_key)
    return endpoint


@pytest.fixture
def attacker_jwks(httpserver_ipv4: HTTPServer, attacker_key: SigningKey) -> JwksEndpoint:
    """An attacker's JWK Set, on a second server (http://127.0.0.1) whose log we can inspect."""
    endpoint = JwksEndpoint(httpserver_ipv4)
    endpoint.publish(attacker_key)
    return endpoint


# --- tokens ------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class TokenMinter:
    """Builds client-authentication JWTs the way a CDS client would, plus hostile variants.

    ``claims(**changes)`` gives the payload of a valid token (``iss``, ``aud``, ``iat = NOW``,
    ``exp = NOW + 300``, a fresh ``jti``); a change to ``None`` removes the claim.
    """

    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE, now: int = NOW) -> None:
        self.issuer = issuer
        self.audience = audience
        self.now = now

    def claims(self, **changes: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": self.now,
            "exp": self.now + 300,
            "jti": str(uuid.uuid4()),
        }
        payload.update(changes)
        return {name: value for name, value in payload.items() if value is not None}

    def header(self, key: SigningKey, **changes: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
        header.update(changes)
        return {name: value for name, value in header.items() if value is not None}

    def sign(
        self,
        key: SigningKey,
        claims: dict[str, Any] | None = None,
        *,
        alg: str | None = None,
        signer: Algorithm | None = None,
        **header_changes: Any,
    ) -> str:
        """A token signed by ``key`` with ``alg`` (default: the key's); the header defaults to
        ``{alg, typ: JWT, kid}`` and ``header_changes`` of ``None`` remove a field.  ``signer``
        overrides PyJWT's algorithm object (e.g. ES384 hashing without the curve check)."""
        algorithm = alg or key.alg
        header = self.header(key, alg=algorithm, **header_changes)
        payload = self.claims() if claims is None else claims
        signing_input = f"{b64url_json(header)}.{b64url_json(payload)}".encode()
        codec = signer or jwt.get_algorithm_by_name(algorithm)
        signature = codec.sign(signing_input, key.private_key)
        return f"{signing_input.decode()}.{b64url(signature)}"

    def unsigned(self, key: SigningKey, claims: dict[str, Any] | None = None) -> str:
        """An ``alg: none`` token (empty signature) naming the trusted kid."""
        header = self.header(key, alg="none")
        payload = self.claims() if claims is None else claims
        return f"{b64url_json(header)}.{b64url_json(payload)}."

    def hmac_with_public_key(self, key: SigningKey, claims: dict[str, Any] | None = None) -> str:
        """HS256 "signed" with the trusted *public* key's PEM as the secret (key confusion)."""
        header = self.header(key, alg="HS256")
        payload = self.claims() if claims is None else claims
        signing_input = f"{b64url_json(header)}.{b64url_json(payload)}"
        mac = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(mac)}"

    @staticmethod
    def with_payload(token: str, payload: dict[str, Any]) -> str:
        """``token`` with its payload segment replaced and the original signature kept."""
        header, _, signature = token.split(".")
        return f"{header}.{b64url_json(payload)}.{signature}"

    @staticmethod
    def bearer(token: str) -> str:
        return f"Bearer {token}"


@pytest.fixture
def mint() -> TokenMinter:
    return TokenMinter()


# --- replay guards and verifiers ---------------------------------------------------------------


class FakeClock:
    """A settable clock for the replay guard."""

    def __init__(self, now: float = NOW) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sqlite_engines(tmp_path: Path) -> Iterator[Callable[[], sa.Engine]]:
    """Factory of independent engines on one SQLite file (one per simulated worker)."""
    engines: list[sa.Engine] = []
    url = f"sqlite:///{tmp_path / 'replay.sqlite3'}"

    def make() -> sa.Engine:
        engine = sa.create_engine(url, connect_args={"timeout": 10})
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def replay_guard(sqlite_engines: Callable[[], sa.Engine]) -> SqlReplayGuard:
    return SqlReplayGuard(sqlite_engines(), clock=FakeClock())


@pytest.fixture
def make_verifier(
    trusted_jwks: JwksEndpoint, replay_guard: SqlReplayGuard
) -> Iterator[Callable[..., JwtVerifier]]:
    """``make_verifier(**policy_fields)``: a verifier trusting ``ISSUER`` -> ``trusted_jwks``.

    Keyword ``guard=`` swaps the replay guard; ``issuers=`` replaces the trusted mapping.  Every
    verifier made is closed (its JWKS refresher threads stopped) when the test ends.
    """
    made: list[JwtVerifier] = []

    def make(*, guard: SqlReplayGuard | None = None, **policy_fields: Any) -> JwtVerifier:
        policy_fields.setdefault("issuers", {ISSUER: trusted_jwks.url})
        policy = JwtPolicy(**policy_fields)
        verifier = JwtVerifier(policy, guard or replay_guard, clock=lambda: NOW)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


@pytest.fixture
def verifier(make_verifier: Callable[..., JwtVerifier]) -> JwtVerifier:
    """The default verifier: default policy, trusted issuer only, clock at ``NOW``."""
    return make_verifier()
