"""SMART App Launch 2.x, the client side: discovery, scopes, authorization URL, code exchange.

OAuth is Authlib's (``OAuth2Session``: PKCE S256, ``state``, client authentication including
``private_key_jwt``); this module only chooses the parameters SMART asks for and turns network
faults into :class:`AppError` with the status the page shows (502 unreachable, 504 too slow).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT

from cds_service.app.errors import AppError

__all__ = [
    "ClientConfig",
    "SmartConfig",
    "authorization_url",
    "discover",
    "exchange_code",
    "granted_write",
    "scopes_for",
]

DISCOVERY_TIMEOUT = 10.0
TOKEN_TIMEOUT = 15.0
MAX_DISCOVERY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ClientConfig:
    """The app's registration with the EHR (settings ``CDS_APP_CLIENT_*``)."""

    client_id: str
    auth: str = "none"  # none | client_secret_basic | private_key_jwt
    secret: str = ""  # the client secret, or the private key (PEM) for private_key_jwt


@dataclass(frozen=True)
class SmartConfig:
    """What ``{iss}/.well-known/smart-configuration`` says we need."""

    authorization_endpoint: str
    token_endpoint: str
    v2: bool  # SMART v2 scopes (patient/X.rs); False: the server advertises only v1


def discover(iss: str, session: requests.Session | None = None) -> SmartConfig:
    """Read the server's SMART configuration; AppError 502/504 when it cannot be had."""
    http = session or _plain_session()
    url = f"{iss.rstrip('/')}/.well-known/smart-configuration"
    try:
        response = http.get(url, headers={"Accept": "application/json"}, timeout=DISCOVERY_TIMEOUT)
        body = response.json() if response.status_code == 200 else None
    except requests.Timeout:
        raise AppError(504, "The EHR's authorization server did not answer in time.") from None
    except (requests.RequestException, ValueError):
        body = None
    finally:
        if session is None:
            http.close()
    if not isinstance(body, dict):
        raise AppError(502, "The EHR's SMART configuration could not be read.")
    endpoints = [body.get("authorization_endpoint"), body.get("token_endpoint")]
    if not all(isinstance(e, str) and e.startswith(("https://", "http://")) for e in endpoints):
        raise AppError(502, "The EHR's SMART configuration names no usable OAuth endpoints.")
    return SmartConfig(str(endpoints[0]), str(endpoints[1]), _speaks_v2(body))


def _speaks_v2(body: dict[str, Any]) -> bool:
    """v2 unless the server advertises v1 and nothing else (SMART 2.x §"Scopes")."""
    capabilities = _strings(body.get("capabilities"))
    scopes = _strings(body.get("scopes_supported"))
    v2 = "permission-v2" in capabilities or any(s.endswith((".rs", ".cruds")) for s in scopes)
    v1 = "permission-v1" in capabilities or any(s.endswith((".read", ".write")) for s in scopes)
    return v2 or not v1


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def scopes_for(resource_types: Iterable[str], *, v2: bool, standalone: bool) -> str:
    """Read scopes for exactly the types the engine reads, plus creating Observations."""
    read, write = ("rs", "c") if v2 else ("read", "write")
    scopes = ["launch/patient" if standalone else "launch"]
    scopes += [f"patient/{kind}.{read}" for kind in sorted(set(resource_types))]
    scopes.append(f"patient/Observation.{write}")
    return " ".join(scopes)


def granted_write(scope: str) -> bool:
    """Whether the granted scopes let the app create an Observation (v2 ``c``, or v1 write)."""
    for item in scope.split():
        context, _, rest = item.partition("/")
        kind, _, permission = rest.partition(".")
        if context not in ("patient", "user") or kind not in ("Observation", "*"):
            continue
        permission = permission.split("?", 1)[0]
        if permission in ("write", "*") or (
            permission and set(permission) <= set("cruds") and "c" in permission
        ):
            return True
    return False


def _client(
    client: ClientConfig, token_endpoint: str, *, redirect_uri: str, scope: str | None = None
) -> OAuth2Session:
    method = client.auth if client.auth != "none" else "none"
    session = OAuth2Session(
        client.client_id,
        client.secret or None,
        token_endpoint_auth_method=method,
        scope=scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    session.trust_env = False
    if client.auth == "private_key_jwt":
        session.register_client_auth_method(PrivateKeyJWT(token_endpoint, alg="RS384"))
    return session


def authorization_url(
    client: ClientConfig,
    config: SmartConfig,
    *,
    iss: str,
    redirect_uri: str,
    scope: str,
    launch: str | None,
) -> tuple[str, str, str]:
    """(URL to send the browser to, state, PKCE code verifier)."""
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)
    extra = {"aud": iss}
    if launch:
        extra["launch"] = launch
    with _client(client, config.token_endpoint, redirect_uri=redirect_uri, scope=scope) as oauth:
        url, _ = oauth.create_authorization_url(
            config.authorization_endpoint, state=state, code_verifier=verifier, **extra
        )
    return url, state, verifier


def exchange_code(
    client: ClientConfig,
    token_endpoint: str,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
) -> dict[str, Any]:
    """The token response (``access_token``, ``scope``, ``patient``, ``appContext``, ...)."""
    with _client(client, token_endpoint, redirect_uri=redirect_uri) as oauth:
        try:
            token = oauth.fetch_token(
                token_endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=verifier,
                timeout=TOKEN_TIMEOUT,
            )
        except requests.Timeout:
            raise AppError(504, "The EHR's token endpoint did not answer in time.") from None
        except requests.RequestException:
            raise AppError(502, "The EHR's token endpoint could not be reached.") from None
        except Exception as error:  # Authlib's OAuthError and friends: a refused exchange
            name = getattr(error, "error", None) or type(error).__name__
            raise AppError(401, f"The EHR refused to issue an access token ({name}).") from None
    if not isinstance(token.get("access_token"), str):
        raise AppError(502, "The EHR's token response carries no access token.")
    return dict(token)


def _plain_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session
