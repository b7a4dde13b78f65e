"""The app's routes: launch, OAuth callback, the page, and recording today's grades.

Handlers stay short: check the cookie, call smart/record/recompute, render. Every failure is an
:class:`AppError` rendered as a plain page with its status (400 bad launch or form, 401 no or
expired session or refused authorisation, 403 no write scope, 502/504 a server that failed).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from datetime import date
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request
from markupsafe import Markup
from werkzeug.wrappers import Response

from cds_service.app import record, smart
from cds_service.app.errors import AppError
from cds_service.app.page import build_plot, relative_day
from cds_service.app.recompute import explain
from cds_service.app.runtime import AppRuntime
from cds_service.app.session import SessionError
from cds_service.markdown_html import render_markdown

log = logging.getLogger("cds_service.app")


bp = Blueprint("smart_app", __name__, url_prefix="/app", template_folder="templates",
               static_folder="static", static_url_path="/static")  # fmt: skip

LAUNCH_COOKIE = "footdrop_app_launch"
SESSION_COOKIE = "footdrop_app_session"
LAUNCH_SECONDS = 600
#: Browsers keep cookies up to 4096 bytes (name, value and attributes): an access token of up to
#: about 2.6 kB fits once encrypted.
MAX_COOKIE_BYTES = 3900


def app_runtime() -> AppRuntime:
    runtime: AppRuntime = current_app.extensions["cds_app"]
    return runtime


@bp.app_template_filter("markdown")
def _markdown(text: str) -> Markup:
    """A page note (markdown from the card content) as HTML; raw HTML in it is escaped."""
    return render_markdown(text)


@bp.after_request
def _headers(response: Response) -> Response:
    """Strict CSP (no script at all), no caching, framing only by the configured EHR origins."""
    ancestors = " ".join(app_runtime().settings.app_frame_ancestors)
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        f"base-uri 'none'; frame-ancestors {ancestors}"
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.errorhandler(AppError)
def _app_error(error: AppError) -> tuple[str, int]:
    log.info("app refused", extra={"event": "app", "status": error.status})
    return render_template("app_error.html", status=error.status, message=error.message), (
        error.status
    )


def _set_cookie(response: Response, name: str, value: str, seconds: int) -> None:
    """Secure, HttpOnly, SameSite=None (the app lives in the EHR's iframe), and Partitioned
    (CHIPS): kept per top-level EHR site, so browsers that block third-party cookies keep it."""
    response.set_cookie(
        name,
        value,
        max_age=seconds,
        path="/app",
        secure=True,
        httponly=True,
        samesite="None",
        partitioned=True,
    )


def _same(expected: object, sent: object) -> bool:
    """Constant-time comparison of a secret we issued with what came back (any text)."""
    if not isinstance(expected, str) or not isinstance(sent, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())


def _redirect_uri() -> str:
    runtime = app_runtime()
    return f"{runtime.public_base_url(request.host_url)}/app/callback"


@bp.get("/launch")
def launch() -> Response:
    """EHR launch (``iss`` + ``launch``) or standalone launch (``iss`` only)."""
    runtime = app_runtime()
    iss = request.args.get("iss", "").strip().rstrip("/")
    launch_id = request.args.get("launch", "").strip() or None
    if not iss:
        raise AppError(400, "This app is opened from the EHR: the launch names no FHIR server.")
    if not runtime.iss_allowed(iss):
        raise AppError(400, "This FHIR server is not one this service is configured to trust.")
    config = smart.discover(iss)
    scope = smart.scopes_for(runtime.resource_types, v2=config.v2, standalone=launch_id is None)
    url, state, verifier = smart.authorization_url(
        runtime.client, config, iss=iss, redirect_uri=_redirect_uri(), scope=scope,
        launch=launch_id,
    )  # fmt: skip
    sealed = runtime.launch_box.seal(
        {"iss": iss, "state": state, "verifier": verifier, "token": config.token_endpoint}
    )
    response = redirect(url, code=302)
    _set_cookie(response, LAUNCH_COOKIE, sealed, LAUNCH_SECONDS)
    return response


@bp.get("/callback")
def callback() -> Response:
    """The authorization server's answer: check ``state``, exchange the code, open a session."""
    runtime = app_runtime()
    try:
        pending = runtime.launch_box.open(request.cookies.get(LAUNCH_COOKIE), LAUNCH_SECONDS)
    except SessionError:
        raise AppError(
            401, "The launch has expired or was not started here: launch again."
        ) from None
    if not _same(pending.get("state"), request.args.get("state")):
        raise AppError(400, "The authorization answer does not belong to this launch (state).")
    error = request.args.get("error")
    if error:
        if error == "access_denied":
            raise AppError(401, "Access was denied: the app was not granted the data it reads.")
        raise AppError(401, "The EHR did not authorise the app.")
    code = request.args.get("code", "")
    if not code:
        raise AppError(400, "The authorization answer carries no code.")
    token = smart.exchange_code(
        runtime.client, str(pending["token"]), code=code, verifier=str(pending["verifier"]),
        redirect_uri=_redirect_uri(),
    )  # fmt: skip
    patient = token.get("patient")
    if not isinstance(patient, str) or not patient:
        raise AppError(400, "The EHR gave no patient context: open the app from a patient chart.")
    lifetime = runtime.settings.app_session_seconds
    expires_in = token.get("expires_in")
    if isinstance(expires_in, int | float) and expires_in > 0:
        lifetime = min(lifetime, int(expires_in))
    session = {
        "iss": pending["iss"],
        "access_token": token["access_token"],
        "patient": patient,
        "scope": str(token.get("scope") or ""),
        "app_context": _app_context(token.get("appContext")),
        "csrf": secrets.token_urlsafe(32),
        "expires": int(time.time()) + lifetime,
    }
    sealed = runtime.session_box.seal(session)
    if len(sealed) > MAX_COOKIE_BYTES:  # a browser would drop it silently: say so instead
        raise AppError(502, "The EHR's access token is too large for this app's session.")
    response = redirect("/app/", code=303)
    _set_cookie(response, SESSION_COOKIE, sealed, lifetime)
    response.delete_cookie(
        LAUNCH_COOKIE, path="/app", secure=True, httponly=True, samesite="None", partitioned=True
    )
    log.info("app launched", extra={"event": "app", "status": 303})
    return response


def _app_context(raw: object) -> dict[str, Any]:
    """The card's appContext (a JSON string): short strings and lists of them, nothing else."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    if not isinstance(raw, dict):
        return {}
    kept: dict[str, Any] = {}
    for key, value in list(raw.items())[:10]:
        if not isinstance(key, str) or len(key) > 40:
            continue
        if isinstance(value, str):
            kept[key] = value[:200]
        elif isinstance(value, list):
            kept[key] = [v[:200] for v in value[:10] if isinstance(v, str)]
    return kept


def _session() -> dict[str, Any]:
    runtime = app_runtime()
    try:
        session = runtime.session_box.open(
            request.cookies.get(SESSION_COOKIE), runtime.settings.app_session_seconds
        )
    except SessionError:
        raise AppError(401, "Your session has expired or was never started: launch the app again "
                       "from the patient's chart.") from None  # fmt: skip
    if int(session.get("expires", 0)) < time.time():
        raise AppError(401, "Your session has expired: launch the app again from the chart.")
    return session


@bp.get("/")
def page() -> str:
    """The evidence and timeline page, recomputed from the FHIR server with the engine."""
    runtime = app_runtime()
    session = _session()
    resources = runtime.read_patient(session["iss"], session["access_token"], session["patient"])
    now = runtime.clock()
    trace = explain(
        {"patientId": session["patient"]}, resources, runtime.content, now,
        "app-" + secrets.token_hex(8), runtime.policy,
    )  # fmt: skip
    return _render_page(trace, session)


def _render_page(trace: dict[str, Any], session: dict[str, Any], **extra: Any) -> str:
    runtime = app_runtime()
    timeline = trace.get("timeline") or {}
    today = str(trace.get("today") or timeline.get("today") or "")
    today_date = date.fromisoformat(today[:10]) if today else date.today()
    writable = smart.granted_write(session.get("scope", ""))
    return render_template(
        "app_page.html",
        trace=trace,
        plot=build_plot(timeline),
        plan=[{**p, "when": relative_day(p.get("due"), today_date)} for p in trace.get("plan", [])],
        relative=lambda value: relative_day(value, today_date),
        app_context=session.get("app_context") or {},
        csrf=session["csrf"],
        writable=writable,
        movements=record.recordable(runtime.mrc_codes),
        choices=record.GRADE_CHOICES,
        recorded=request.args.get("recorded", "")
        if request.args.get("recorded", "").isdigit()
        else "",
        **extra,
    )


def _check_csrf(session: dict[str, Any]) -> None:
    sent = request.form.get("csrf", "")
    if not sent or not _same(sent, session.get("csrf")):
        raise AppError(400, "The form has expired or did not come from this page: reload it.")


def _posted_grades() -> tuple[dict[str, Any], list[record.Grade]]:
    """The session and the grades of a posted form: CSRF checked, write scope required."""
    session = _session()
    _check_csrf(session)
    if not smart.granted_write(session.get("scope", "")):
        raise AppError(403, "The EHR granted read access only: grades cannot be recorded here.")
    return session, record.parse_form(request.form, app_runtime().mrc_codes)


@bp.post("/record")
def record_grades() -> str:
    """Step 1: check today's grades and show them back for confirmation (nothing written yet)."""
    session, grades = _posted_grades()
    return render_template("app_confirm.html", grades=grades, csrf=session["csrf"])


@bp.post("/record/confirm")
def confirm_grades() -> Response:
    """Step 2: write one Observation per grade to the FHIR server, then back to the page."""
    runtime = app_runtime()
    session, grades = _posted_grades()
    observations = [
        record.observation(grade, session["patient"], runtime.clock(), runtime.mrc_codes)
        for grade in grades
    ]
    record.write(session["iss"], session["access_token"], observations)
    log.info("app recorded grades", extra={"event": "app", "count": len(observations)})
    return redirect(f"/app/?recorded={len(observations)}", code=303)
