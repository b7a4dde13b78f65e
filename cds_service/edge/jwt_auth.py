"""Authentication of CDS clients by the JWT they present (CDS Hooks 2.0 §"Trusting CDS Clients").

Every hook and feedback call carries ``Authorization: Bearer <JWT>``, signed by the CDS client
with an asymmetric key published in the client's JWK Set.  :class:`JwtVerifier` accepts a token
only if all of the following hold, and otherwise raises :class:`AuthenticationError` (the web
layer answers 401; the ``reason`` is for the log only):

header
    ``alg`` is in the configured allow-list (default ES384, RS384; ``none`` and HMAC can never be
    configured).  ``kid`` is present.  ``typ``, when present, is ``JWT`` (case-insensitive;
    ``application/jwt`` is the same media type, RFC 7515 §4.1.9); a missing ``typ`` is accepted
    unless ``JwtPolicy.require_typ`` is set -- the spec calls it REQUIRED but it adds no security
    here (``aud`` already binds the token to this endpoint), so refusing it would only cost
    interoperability.  ``jku``, when present, must equal the JWKS URL configured for the issuer;
    no caller-chosen URL is ever fetched.
key
    The unverified token is read only to pick the issuer (``iss``) and the key (``kid``).  ``iss``
    must be a configured issuer; the key is the ``kid`` entry of *that* issuer's JWK Set, kept by
    one :class:`~cds_service.edge.jwks.IssuerKeys` per issuer: refreshed in the background with a
    hard deadline and a size limit, the last good set serving (up to ``jwks_max_stale_seconds``)
    while the issuer is unreachable, an unknown ``kid`` triggering at most one refetch per
    cooldown -- which is how rotated keys are picked up -- and no request waiting on the network
    for more than ``jwks_wait_seconds``.  The key type must fit ``alg`` (and the JWK's own
    ``alg``, if it declares one); RSA keys shorter than 2048 bits are refused.
claims
    ``aud`` equals the endpoint URL (or is an array containing it); ``exp``, ``iat`` and ``jti``
    are present; ``exp`` has not passed and ``iat`` is not in the future (both with
    ``leeway_seconds``); ``nbf``, if present, has been reached; ``exp - iat`` is positive and at
    most ``max_lifetime_seconds``; ``tenant``, if present, is a string.
replay
    Last (so that forged or otherwise invalid tokens cannot burn a ``jti``), ``(iss, jti)`` is
    claimed in the shared :class:`~cds_service.edge.replay_guard.ReplayGuard` until
    ``exp + leeway``; a second use is refused.  Errors of the replay store itself (database down)
    are not authentication failures and propagate unchanged.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import get_default_algorithms

if TYPE_CHECKING:
    from jwt.algorithms import AllowedPublicKeys

from .jwks import IssuerKeys, KeySetStatus, KeysUnavailable, RefreshPolicy
from .replay_guard import MAX_ISSUER_LENGTH, MAX_JTI_LENGTH, ReplayGuard

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "AuthenticationError",
    "Claims",
    "JwtPolicy",
    "JwtVerifier",
]

#: Signature algorithms that may be configured: asymmetric ones PyJWT implements.  ``none`` and
#: the HMAC family are refused (the spec forbids them; HMAC "keyed" with a public key is the
#: classic key-confusion attack).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

#: Key classes a JWK must produce for each algorithm family (checked before verification so a
#: kid pointing at a key of the wrong type is an authentication failure, not a TypeError).
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "RS": (rsa.RSAPublicKey, rsa.RSAPrivateKey),
    "PS": (rsa.RSAPublicKey, rsa.RSAPrivateKey),
    "ES": (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey),
    "Ed": (
        ed25519.Ed25519PublicKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PublicKey,
        ed448.Ed448PrivateKey,
    ),
}

#: Upper bound on the size of the presented token; anything larger is refused unparsed.
MAX_TOKEN_LENGTH = 8192
MAX_KID_LENGTH = 256

#: JWS compact serialisation: three base64url segments (the signature may be empty, which only
#: ``alg: none`` would produce -- refused later with a clearer reason).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ACCEPTED_TYP = frozenset({"jwt", "application/jwt"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})

#: The token is parsed once (base64url and JSON of header and payload) by PyJWT without any
#: check; the signature is then verified by PyJWT's algorithm over the same bytes and the claims
#: checked here. Measured: PyJWT's get_unverified_header + decode(unverified) + decode(verified)
#: parsed it three times (about 60 µs per call beside the 0.85 ms of the ES384 check).
_UNVERIFIED = jwt.PyJWT()
_PARSE_ONLY: Any = {
    "verify_signature": False,
    "verify_aud": False,
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}
_ALGORITHMS = get_default_algorithms()


class AuthenticationError(Exception):
    """The caller could not be authenticated.

    ``reason`` is a short explanation for the server log.  It never contains the token and names
    no claims other than ``iss``, ``kid``, ``jti`` and a refused ``aud`` (quoted and truncated,
    as they come from the caller).  It must not be sent to the caller.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    """What a verified token tells the service about the caller."""

    iss: str
    jti: str
    exp: float
    tenant: str | None = None


@dataclass(frozen=True)
class JwtPolicy:
    """Which CDS clients are trusted and how strictly their tokens are checked.

    Validated at construction: ``ValueError`` for ``none``/HMAC/unknown algorithms, an empty
    issuer mapping, or a JWKS URL that is not ``https`` (plain ``http`` only for loopback hosts,
    or anywhere when ``allow_insecure_jwks`` is set -- for tests and closed networks only).
    """

    issuers: Mapping[str, str]  # iss -> JWKS URL
    algorithms: tuple[str, ...] = ("ES384", "RS384")
    leeway_seconds: int = 30
    max_lifetime_seconds: int = 3600
    #: Hard deadline of one JWKS fetch: connect, TLS, headers and body together.
    jwks_timeout_seconds: float = 2.0
    allow_insecure_jwks: bool = False
    #: Refuse tokens without a ``typ`` header (the spec's REQUIRED); off by default, see module doc.
    require_typ: bool = False
    #: Interval of the background refresh of each issuer's JWK Set (after a success).
    jwks_cache_seconds: float = 300.0
    #: Minimum time between two fetches of one issuer's JWKS when an unknown ``kid`` (or a failed
    #: refresh) asks for an early one: what random kids can make us fetch, and the longest a key
    #: published just after such a fetch can be refused.
    jwks_refresh_cooldown_seconds: float = 10.0
    #: How long the last good JWK Set keeps serving while the issuer's JWKS cannot be fetched.
    jwks_max_stale_seconds: float = 86400.0
    #: Largest JWKS body accepted (a larger one is a failed refresh).
    jwks_max_bytes: int = 256 * 1024
    #: Longest a request waits for a refresh its unknown ``kid`` triggered (or one in flight).
    jwks_wait_seconds: float = 1.0
    #: iss -> the ``jku`` its tokens carry, when its JWK Set is fetched from another URL (e.g. the
    #: CDS Hooks sandbox's keys served locally). That ``jku`` is accepted too; it is never fetched.
    jku: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        issuers = dict(self.issuers)
        if not issuers:
            raise ValueError("JwtPolicy.issuers: at least one trusted issuer is required")
        for iss, url in issuers.items():
            if not isinstance(iss, str) or not iss:
                raise ValueError("JwtPolicy.issuers: issuer names must be non-empty strings")
            if len(iss) > MAX_ISSUER_LENGTH:
                raise ValueError(f"JwtPolicy.issuers: issuer {iss[:40]!r}... is too long")
            _check_jwks_url(iss, url, allow_insecure=self.allow_insecure_jwks)
        # A read-only copy: later changes to the caller's dict must not change who is trusted.
        object.__setattr__(self, "issuers", MappingProxyType(issuers))
        jku = dict(self.jku)
        for iss, url in jku.items():
            if iss not in issuers or not isinstance(url, str) or not url:
                raise ValueError(f"JwtPolicy.jku: {iss!r} must be a trusted issuer with a URL")
        object.__setattr__(self, "jku", MappingProxyType(jku))

        algorithms = tuple(self.algorithms)
        if isinstance(self.algorithms, str) or not algorithms:
            raise ValueError("JwtPolicy.algorithms must be a non-empty tuple of names")
        implemented = get_default_algorithms()
        for alg in algorithms:
            if not isinstance(alg, str) or alg.lower() == "none":
                raise ValueError("JwtPolicy.algorithms: 'none' is never allowed")
            if alg.upper().startswith("HS"):
                raise ValueError(f"JwtPolicy.algorithms: symmetric algorithm {alg!r} refused")
            if alg not in ASYMMETRIC_ALGORITHMS or alg not in implemented:
                raise ValueError(f"JwtPolicy.algorithms: unknown or unsupported {alg!r}")
        object.__setattr__(self, "algorithms", algorithms)

        _check_number("leeway_seconds", self.leeway_seconds, minimum=0)
        _check_number("max_lifetime_seconds", self.max_lifetime_seconds, minimum=1)
        _check_number("jwks_timeout_seconds", self.jwks_timeout_seconds, minimum=0, strict=True)
        _check_number("jwks_cache_seconds", self.jwks_cache_seconds, minimum=0, strict=True)
        _check_number(
            "jwks_refresh_cooldown_seconds", self.jwks_refresh_cooldown_seconds, minimum=0
        )
        _check_number("jwks_max_stale_seconds", self.jwks_max_stale_seconds, minimum=0, strict=True)
        _check_number("jwks_wait_seconds", self.jwks_wait_seconds, minimum=0)
        if isinstance(self.jwks_max_bytes, bool) or not isinstance(self.jwks_max_bytes, int):
            raise ValueError("JwtPolicy.jwks_max_bytes must be a whole number of bytes")
        _check_number("jwks_max_bytes", self.jwks_max_bytes, minimum=1024)


class JwtVerifier:
    """Verifies ``Authorization`` headers against a :class:`JwtPolicy`.

    Create one per process and keep it: it owns one :class:`~cds_service.edge.jwks.IssuerKeys`
    (a JWK Set and its background refresher thread) per trusted issuer; :meth:`close` stops them.
    Thread-safe as long as the replay guard is.
    """

    def __init__(
        self,
        policy: JwtPolicy,
        replay_guard: ReplayGuard,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._policy = policy
        self._replay_guard = replay_guard
        self._clock = clock
        refresh = RefreshPolicy(
            deadline_seconds=policy.jwks_timeout_seconds,
            refresh_seconds=policy.jwks_cache_seconds,
            cooldown_seconds=policy.jwks_refresh_cooldown_seconds,
            max_stale_seconds=policy.jwks_max_stale_seconds,
            max_bytes=policy.jwks_max_bytes,
            wait_seconds=policy.jwks_wait_seconds,
        )
        self._issuer_keys: dict[str, IssuerKeys] = {
            iss: IssuerKeys(iss, url, refresh) for iss, url in policy.issuers.items()
        }

    def start(self) -> None:
        """Begin fetching every issuer's JWK Set now (otherwise on each issuer's first token)."""
        for keys in self._issuer_keys.values():
            keys.start()

    def close(self) -> None:
        """Stop the refresher threads (a fetch in flight is aborted); idempotent."""
        for keys in self._issuer_keys.values():
            keys.close()

    def key_set_status(self) -> dict[str, KeySetStatus]:
        """Each trusted issuer's key set: kids, age, fetches, failures (no secrets)."""
        return {iss: keys.status() for iss, keys in self._issuer_keys.items()}

    @property
    def policy(self) -> JwtPolicy:
        return self._policy

    @property
    def replay_guard(self) -> ReplayGuard:
        """Where used ``jti`` values are claimed (shared by every worker)."""
        return self._replay_guard

    def verify(self, authorization: str | None, audience: str) -> Claims:
        """Authenticate one request; return its claims or raise :class:`AuthenticationError`.

        ``authorization`` is the raw ``Authorization`` header (``None`` if absent); ``audience``
        is this endpoint's URL as the client sees it (what ``aud`` must contain).
        """
        if not isinstance(audience, str) or not audience:
            raise ValueError("audience must be the endpoint URL")
        policy = self._policy
        token = _bearer_token(authorization)

        # --- one parse of the token (header, payload, signature); trusted only after the check --
        try:
            decoded = _UNVERIFIED.decode_complete(token, options=_PARSE_ONLY)
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise AuthenticationError(f"malformed token ({type(exc).__name__})") from None
        header: dict[str, Any] = decoded["header"]
        unverified: dict[str, Any] = decoded["payload"]

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in policy.algorithms:
            raise AuthenticationError(f"alg {_q(alg)} not allowed")
        typ = header.get("typ")
        if typ is None:
            if policy.require_typ:
                raise AuthenticationError("typ header missing")
        elif not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise AuthenticationError(f"typ {_q(typ)} not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise AuthenticationError("kid header missing or invalid")

        iss = unverified.get("iss")
        if not isinstance(iss, str) or iss not in self._issuer_keys:
            raise AuthenticationError(f"untrusted iss {_q(iss)} (kid={_q(kid)})")
        issuer_keys = self._issuer_keys[iss]
        where = f"iss={_q(iss)} kid={_q(kid)}"

        if "jku" in header and header["jku"] not in (issuer_keys.url, policy.jku.get(iss)):
            raise AuthenticationError(
                f"jku is not the JWKS URL configured for the issuer ({where})"
            )

        # --- key from the issuer's trusted JWK Set (never waits long on the network) -----------
        try:
            jwk = issuer_keys.signing_key(kid)
        except KeysUnavailable as unavailable:
            raise AuthenticationError(f"{unavailable.reason} ({where})") from None

        declared_alg = _declared_alg(jwk)
        if declared_alg is not None and declared_alg != alg:
            raise AuthenticationError(f"alg {_q(alg)} differs from the key's alg ({where})")
        if not isinstance(jwk.key, _KEY_TYPES[alg[:2]]):
            raise AuthenticationError(f"key type does not fit alg {_q(alg)} ({where})")

        # --- signature (PyJWT's algorithm on the parts parsed above), then audience ----------
        algorithm = _ALGORITHMS[alg]
        try:
            prepared = algorithm.prepare_key(cast("AllowedPublicKeys", jwk.key))
            too_short = algorithm.check_key_length(prepared)
            if too_short:
                raise AuthenticationError(f"token refused (InvalidKeyError; {where})")
            signing_input = token.rsplit(".", 1)[0].encode("ascii")
            valid = algorithm.verify(signing_input, prepared, decoded["signature"])
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthenticationError(f"token refused ({type(exc).__name__}; {where})") from None
        if not valid:
            raise AuthenticationError(f"bad signature ({where})")
        payload = unverified  # verified now: the signature covers exactly these bytes
        for claim in ("iss", "aud", "exp", "iat", "jti"):
            if claim not in payload:
                raise AuthenticationError(f"required claim {claim!r} missing ({where})")
        aud = payload["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise AuthenticationError(f"token refused (InvalidAudienceError; {where})")
        if audience not in audiences:  # aud may be an array containing the endpoint
            # Both audiences, so a CDS_PUBLIC_URL that differs from the host the client calls
            # (discovery works, every hook call is 401) is plain from one log line.
            raise AuthenticationError(
                f"aud {_q(aud, 160)} does not name this endpoint: expected "
                f"{_q(audience, 160)} (CDS_PUBLIC_URL must be the base URL the client calls; "
                f"{where})"
            )

        return self._check_claims_and_claim_jti(payload, iss, where)

    def _check_claims_and_claim_jti(self, payload: dict[str, Any], iss: str, where: str) -> Claims:
        policy = self._policy
        leeway = policy.leeway_seconds
        now = self._clock()

        if payload.get("iss") != iss:  # defensive: it is the same decoded payload
            raise AuthenticationError(f"iss changed during verification ({where})")
        exp = _numeric_date(payload, "exp", where)
        iat = _numeric_date(payload, "iat", where)
        jti = payload["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise AuthenticationError(f"jti missing or invalid ({where})")
        where = f"{where} jti={_q(jti)}"

        if now >= exp + leeway:
            raise AuthenticationError(f"token expired ({where})")
        if iat > now + leeway:
            raise AuthenticationError(f"iat is in the future ({where})")
        if "nbf" in payload and _numeric_date(payload, "nbf", where) > now + leeway:
            raise AuthenticationError(f"token not yet valid (nbf) ({where})")
        lifetime = exp - iat
        if lifetime <= 0:
            raise AuthenticationError(f"exp is not after iat ({where})")
        if lifetime > policy.max_lifetime_seconds:
            raise AuthenticationError(
                f"lifetime {lifetime:.0f}s exceeds {policy.max_lifetime_seconds}s ({where})"
            )
        tenant = payload.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthenticationError(f"tenant is not a string ({where})")

        if not self._replay_guard.claim(iss, jti, exp + leeway):
            raise AuthenticationError(f"jti replayed ({where})")
        return Claims(iss=iss, jti=jti, exp=exp, tenant=tenant)


# --- helpers ---------------------------------------------------------------------------------


def _bearer_token(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise AuthenticationError("Authorization header missing")
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthenticationError("Authorization header is not 'Bearer <token>'")
    token = parts[1]
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationError("bearer token too long")
    if not _COMPACT_JWS.fullmatch(token):
        raise AuthenticationError("bearer token is not a compact JWS")
    return token


def _numeric_date(payload: Mapping[str, Any], name: str, where: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthenticationError(f"{name} is not a NumericDate ({where})")
    return float(value)


def _declared_alg(jwk: jwt.PyJWK) -> str | None:
    """The ``alg`` member the JWK itself declares, if any.

    ``PyJWK.algorithm_name`` cannot tell: without a declared ``alg`` PyJWT guesses one from the
    key type (RS256 for every RSA key), which would wrongly refuse RS384 tokens.  The raw JWK is
    only reachable through PyJWK's ``_jwk_data`` attribute (stable throughout PyJWT 2.x).
    """
    data = getattr(jwk, "_jwk_data", None)
    declared = data.get("alg") if isinstance(data, Mapping) else None
    return declared if isinstance(declared, str) else None


def _q(value: object, limit: int = 80) -> str:
    """Caller-supplied value made safe for a log line: repr (escapes controls), truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_jwks_url(iss: str, url: object, *, allow_insecure: bool) -> None:
    if not isinstance(url, str) or not url:
        raise ValueError(f"JwtPolicy.issuers[{iss!r}]: the JWKS URL must be a non-empty string")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"JwtPolicy.issuers[{iss!r}]: JWKS URL must be an absolute http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"JwtPolicy.issuers[{iss!r}]: JWKS URL must not contain credentials")
    if scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ValueError(
            f"JwtPolicy.issuers[{iss!r}]: JWKS URL must use https "
            "(http only for loopback hosts or with allow_insecure_jwks=True)"
        )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum if strict else value >= minimum)
    )
    if not ok:
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ValueError(f"JwtPolicy.{name} must be a finite number {bound}")
