"""A test double of the EHR around the loopback FHIR server: SMART discovery, OAuth, a FHIR proxy.

The authorization server is Authlib's (``AuthorizationServer`` with the authorization-code grant
and PKCE required); it auto-approves a launch, or denies it (``deny``), or grants read scopes
only (``read_only``). Its token response carries the launch's ``patient`` and ``appContext``.
``{base}/fhir`` serves ``.well-known/smart-configuration`` and forwards everything else to the
SEKMET server after checking the bearer token it issued (``fhir_down`` answers 503 instead);
``/ehr?src=...`` is a chart page showing the app in a 400 px iframe, as a CDS client does.
Everything runs in one thread on a free loopback port, stopped by ``close()``.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, jsonify, request
from markupsafe import escape
from werkzeug.serving import make_server

CLIENT_ID = "footdrop-cds-app"
FHIR_JSON = "application/fhir+json"


@dataclass
class Client(ClientMixin):
    """The app as registered with the EHR: a public client (no secret), PKCE required."""

    redirect_prefix: str

    def get_client_id(self) -> str:
        return CLIENT_ID

    def get_default_redirect_uri(self) -> str:
        return self.redirect_prefix + "/app/callback"

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.get_default_redirect_uri()

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code:
    code: str
    redirect_uri: str
    scope: str
    launch: dict[str, Any]
    code_challenge: str | None
    code_challenge_method: str | None
    issued: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() - self.issued > 300


class EhrDouble:
    """The EHR's authorization server and FHIR endpoint, in front of a SEKMET server."""

    def __init__(self, sekmet_base: str, sekmet_token: str) -> None:
        self.sekmet_base = sekmet_base.rstrip("/")
        self.sekmet_token = sekmet_token
        self.deny = False
        self.read_only = False
        self.fhir_down = False
        self.hold = False  # the authorization page waits (the user has not answered yet)
        #: The patient the user picks on the authorization page of a standalone launch.
        self.standalone_patient: str | None = None
        self.launches: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: set[str] = set()
        self.authorize_requests: list[dict[str, str]] = []
        self.client = Client("")
        self._app = self._build()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        self.fhir_base = f"{self.base_url}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()

    def launch(self, patient: str, app_context: str | None) -> str:
        """Register an EHR launch context; the opaque ``launch`` value the EHR puts in the URL."""
        launch_id = secrets.token_urlsafe(12)
        self.launches[launch_id] = {"patient": patient, "appContext": app_context}
        return launch_id

    def _build(self) -> Flask:
        app = Flask("ehr-double")
        double = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]  # noqa: RUF012 - Authlib's class attribute

            def save_authorization_code(self, code: str, req: Any) -> None:
                launch = double.launches.get(request.args.get("launch", ""), {})
                if "launch" not in request.args and "launch/patient" in (req.scope or "").split():
                    launch = {"patient": double.standalone_patient}
                scope = req.scope or ""
                if double.read_only:
                    scope = " ".join(s for s in scope.split() if not s.endswith(".c"))
                double.codes[code] = Code(
                    code,
                    req.payload.redirect_uri,
                    scope,
                    launch,
                    req.payload.data.get("code_challenge"),
                    req.payload.data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Any) -> Code | None:
                return double.codes.get(code)

            def delete_authorization_code(self, authorization_code: Code) -> None:
                double.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> dict[str, str]:
                return {"id": "Practitioner/example"}

        def save_token(token: dict[str, Any], req: Any) -> None:
            double.tokens.add(token["access_token"])
            launch = req.authorization_code.launch
            if launch.get("patient"):
                token["patient"] = launch["patient"]
            if launch.get("appContext"):
                token["appContext"] = launch["appContext"]

        server = AuthorizationServer(
            app, query_client=lambda cid: double.client if cid == CLIENT_ID else None,
            save_token=save_token,
        )  # fmt: skip
        server.register_grant(CodeGrant, [CodeChallenge(required=True)])

        @app.get("/fhir/.well-known/smart-configuration")
        def smart_configuration() -> Response:
            return jsonify(
                {
                    "issuer": double.base_url,
                    "authorization_endpoint": f"{double.base_url}/authorize",
                    "token_endpoint": f"{double.base_url}/token",
                    "token_endpoint_auth_methods_supported": ["none"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "capabilities": ["launch-ehr", "launch-standalone", "client-public",
                                     "context-ehr-patient", "permission-v2"],
                }
            )  # fmt: skip

        @app.get("/ehr")
        def ehr_page() -> Response:
            """The EHR's chart with the app in a 400 px side-panel iframe (``src``: launch URL)."""
            src = escape(request.args.get("src", ""))
            return Response(
                f'<!doctype html><html lang="en"><title>EHR</title><body><main>'
                f'<iframe src="{src}" width="400" height="900" title="Evidence and timeline">'
                f"</iframe></main></body></html>",
                content_type="text/html",
            )

        @app.get("/authorize")
        def authorize() -> Response:
            double.authorize_requests.append(dict(request.args))
            if double.hold:
                return Response("held", content_type="text/plain")
            if request.args.get("aud", "").rstrip("/") != double.fhir_base:
                return Response("aud must be the FHIR base URL", status=400)
            user = None if double.deny else {"id": "Practitioner/example"}
            grant = server.get_consent_grant(end_user=user)
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/token")
        def token() -> Response:
            return server.create_token_response()

        @app.route("/fhir", defaults={"rest": ""}, methods=["GET", "POST"])
        @app.route("/fhir/<path:rest>", methods=["GET", "POST"])
        def fhir(rest: str) -> Response:
            if double.fhir_down:
                return Response("unavailable", status=503)
            sent = request.headers.get("Authorization", "")
            if not sent.startswith("Bearer ") or sent[7:] not in double.tokens:
                return Response("unauthorized", status=401)
            url = f"{double.sekmet_base}/{rest}" if rest else double.sekmet_base
            if request.query_string:
                url += "?" + request.query_string.decode()
            upstream = requests.request(
                request.method, url, data=request.get_data(), timeout=30,
                headers={"Authorization": f"Bearer {double.sekmet_token}",
                         "Content-Type": request.headers.get("Content-Type", FHIR_JSON),
                         "Accept": FHIR_JSON},
            )  # fmt: skip
            body = upstream.content.replace(double.sekmet_base.encode(), double.fhir_base.encode())
            return Response(body, status=upstream.status_code,
                            content_type=upstream.headers.get("Content-Type"))  # fmt: skip

        return app
