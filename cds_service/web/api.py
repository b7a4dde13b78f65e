"""HTTP in, plain data out: discovery, hook calls, feedback, health and the OpenAPI document."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from cds_service import __version__, metrics, schemas
from cds_service.domain.request import HookRequest
from cds_service.domain.services import KNOWN_HOOKS, ServiceSpec
from cds_service.edge.database import StoreUnavailableError
from cds_service.edge.jwt_auth import AuthenticationError
from cds_service.web.body import read_json_object
from cds_service.web.errors import ApiError
from cds_service.web.jsonout import compact_json, json_response
from cds_service.web.runtime import Runtime

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.web")


def runtime() -> Runtime:
    return current_app.extensions["cds_runtime"]


@bp.before_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@bp.before_request
def _authenticate() -> None:
    """Verify the caller's JWT on hook and feedback calls (never on preflight or discovery)."""
    if request.method == "OPTIONS" or request.endpoint not in ("cds.call_service", "cds.feedback"):
        return
    rt = runtime()
    if rt.verifier is None:
        return
    audience = rt.public_base_url(request.host_url) + request.path
    try:
        claims = rt.verifier.verify(request.headers.get("Authorization"), audience)
    except AuthenticationError as error:
        metrics.count_jwt_rejection(error.reason)
        log.warning(
            "authentication failed",
            extra={
                "event": "auth",
                "reason": error.reason,
                "path": request.path,
                "status": 401,
            },
        )
        failure = ApiError(401, "unauthorized", ["a valid signed JWT bearer token is required"])
        failure.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
        raise failure from None
    except Exception as error:  # the replay store (database) failed: we cannot vouch for the caller
        metrics.count_store_error("replay")
        log.error(
            "authentication unavailable",
            extra={"event": "auth", "error_class": type(error).__name__, "status": 503},
        )
        raise ApiError(503, "authentication unavailable", ["retry later"]) from None
    g.issuer = claims.iss  # the verified issuer: whose FHIR servers this call may name


@bp.get("/cds-services")
def discovery() -> Response:
    return json_response(runtime().discovery_json)


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    rt = runtime()
    candidates = [spec for spec in rt.services if spec.id == service_id]
    if not candidates:
        raise ApiError(404, "unknown service", [f"no CDS service with id {service_id!r}"])
    document = read_json_object(request)
    _check_hook_name(document)
    try:
        problems = schemas.hook_request_problems(document)
    except RecursionError:
        problems = ["$: JSON is nested too deeply"]
    if problems:
        raise ApiError(400, "invalid request", problems)
    spec = _spec_for_hook(candidates, document["hook"])
    hook_request = HookRequest.from_json(document)
    g.hook_instance = hook_request.hook_instance
    g.service_id = spec.id
    outcome = rt.runner.run(spec, hook_request, rt.clock(), issuer=g.get("issuer"))
    g.counts = {
        "cards": outcome.cards,
        "resources": outcome.resources,
        "skipped": outcome.skipped,
        "fetched_keys": outcome.fetched_keys,
        "fetch_failures": sorted(outcome.fetch_failures),
    }
    metrics.observe_cards(spec.id, outcome.body["cards"])
    return json_response(compact_json(outcome.body))


def _check_hook_name(document: dict[str, Any]) -> None:
    hook = document.get("hook")
    if isinstance(hook, str) and hook not in KNOWN_HOOKS and "." not in hook:
        raise ApiError(400, "unknown hook", [f"$.hook: {hook!r} is not a CDS Hooks hook"])


def _spec_for_hook(candidates: list[ServiceSpec], hook: str) -> ServiceSpec:
    for spec in candidates:
        if spec.hook == hook:
            return spec
    expected = ", ".join(sorted(spec.hook for spec in candidates))
    raise ApiError(
        400,
        "wrong hook",
        [f"$.hook: service {candidates[0].id!r} handles {expected}, not {hook!r}"],
    )


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    rt = runtime()
    if not any(spec.id == service_id for spec in rt.services):
        raise ApiError(404, "unknown service", [f"no CDS service with id {service_id!r}"])
    document = read_json_object(request)
    try:
        problems = schemas.problems("feedback-request", document)
    except RecursionError:
        problems = ["$: JSON is nested too deeply"]
    problems = problems or _impossible_timestamps(document["feedback"])
    if problems:
        raise ApiError(400, "invalid feedback", problems)
    g.service_id = service_id
    items = document["feedback"]
    try:
        result = rt.store.record(service_id, items)
    except StoreUnavailableError:
        metrics.count_store_error("database")
        raise ApiError(503, "feedback store unavailable", ["nothing was stored; retry"]) from None
    metrics.count_feedback(service_id, result.stored, result.duplicates)
    g.counts = {"items": len(items), "stored": result.stored, "duplicates": result.duplicates}
    return jsonify({"stored": result.stored, "duplicates": result.duplicates})


def _impossible_timestamps(items: list[dict[str, Any]]) -> list[str]:
    """RFC 3339 times the schema's pattern lets through but no calendar has (month 13, day 0)."""
    found = []
    for index, item in enumerate(items):
        text = item["outcomeTimestamp"].upper()
        try:
            datetime.fromisoformat(text)
        except ValueError:
            found.append(f"$.feedback[{index}].outcomeTimestamp: {text!r} is not a real date-time")
    return found


@bp.get("/healthz")
def healthz() -> Response:
    """What actually works: the feedback database, and the replay store every hook writes to.

    Any part down is 503 with the same body, so an orchestrator can act on what failed.
    """
    rt = runtime()
    parts: dict[str, str] = {"database": "ok", "replay": "off"}
    try:
        rt.store.ping()
    except StoreUnavailableError:
        metrics.count_store_error("database")
        parts["database"] = "down"
    if rt.verifier is not None:
        try:
            rt.verifier.replay_guard.probe()
            parts["replay"] = "ok"
        except Exception as error:  # any failure of the store is "down", whatever its class
            metrics.count_store_error("replay")
            parts["replay"] = "down"
            log.error(
                "replay store probe failed",
                extra={"event": "health", "error_class": type(error).__name__},
            )
    healthy = "down" not in parts.values()
    body = {"status": "ok" if healthy else "down", "version": __version__, **parts}
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return json_response(runtime().openapi_json)


@bp.after_app_request
def _options_have_no_body(response: Response) -> Response:
    """OPTIONS (preflight or not) answers 204 with Allow and no body, never an empty text/html."""
    if request.method == "OPTIONS" and response.status_code == 200 and not response.get_data():
        response.status_code = 204
        del response.headers["Content-Type"]
    return response


@bp.after_request
def _log_request(response: Response) -> Response:
    started = g.get("started")
    elapsed = time.perf_counter() - started if started else 0.0
    duration = round(elapsed * 1000, 2) if started else None
    rule = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.observe_request(rule, g.get("service_id", ""), response.status_code, elapsed)
    fields: dict[str, Any] = {
        "event": "request",
        "method": request.method,
        "path": rule,
        "status": response.status_code,
        "duration_ms": duration,
    }
    for name in ("hook_instance", "service_id"):
        if name in g:
            fields[name] = g.get(name)
    fields.update(g.get("counts", {}))
    log.info("handled", extra=fields)
    return response
