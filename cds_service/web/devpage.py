"""The development page: what the service is, where its API is, and a card preview.

Registered only outside production (there ``/`` stays a 404). The preview runs a bundled demo
patient, dated today, through the app's own hook endpoint in-process (the Flask test client: the
same parsing, validation, authentication and handlers as a real call) and shows the cards the way
the CDS Hooks sandbox does, beside the request and response JSON. No script, no CDN, a strict CSP.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template, request

from cds_service import __version__
from cds_service.demo_data import DemoPatient, demo_requests, find_demo
from cds_service.web.api_docs import operations, schemas
from cds_service.web.card_view import pretty_json, response_cards
from cds_service.web.runtime import Runtime

bp = Blueprint(
    "devpage",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/devpage-static",
)

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _runtime() -> Runtime:
    return current_app.extensions["cds_runtime"]


@bp.after_request
def _harden(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/")
def index() -> tuple[str, int]:
    rt = _runtime()
    now = rt.clock()
    slug = request.args.get("demo")
    chosen = find_demo(slug, now) if slug else None
    preview = _run(chosen) if chosen is not None else None
    status = 404 if slug and chosen is None else 200
    page = render_template(
        "devpage/index.html",
        version=__version__,
        demos=demo_requests(now),
        chosen=chosen,
        unknown=slug if status == 404 else None,
        preview=preview,
        services=rt.services,
        auth=rt.settings.auth,
    )
    return page, status


@bp.get("/docs")
def docs() -> str:
    document = _runtime().openapi
    return render_template(
        "devpage/docs.html",
        version=__version__,
        info=document.get("info", {}),
        operations=operations(document),
        schemas=schemas(document),
    )


def _run(demo: DemoPatient) -> dict[str, Any]:
    """POST the demo's request to the service's own endpoint, in-process, in a fresh app context
    (so nothing the hook call keeps in ``g`` leaks into this page's request)."""
    base_url = request.host_url  # as if the page's client called: the card's links name it
    with current_app.app_context():
        response = current_app.test_client().post(
            f"/cds-services/{demo.service_id}", json=demo.request, base_url=base_url
        )
    body = response.get_json(silent=True)
    return {
        "status": response.status_code,
        "path": f"/cds-services/{demo.service_id}",
        "cards": response_cards(body) if response.status_code == 200 else [],
        "request_json": pretty_json(demo.request),
        "response_json": pretty_json(body) if body is not None else response.get_data(as_text=True),
    }
