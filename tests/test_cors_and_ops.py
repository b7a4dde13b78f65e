"""Browser access (CORS), health, OpenAPI, JSON logs without PHI, and the Dockerfile's promises."""

from __future__ import annotations

import io
import json
import logging

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from cds_service import create_app
from cds_service.logs import JsonFormatter
from tests.conftest import FOOTDROP, ROOT, dispose, patient_view_request, with_settings

SANDBOX = "https://sandbox.cds-hooks.org"


@pytest.mark.parametrize(
    "path", ["/cds-services", f"/cds-services/{FOOTDROP}", f"/cds-services/{FOOTDROP}/feedback"]
)
def test_preflight_succeeds_without_auth_and_allows_authorization(tmp_path, settings, clock, path):
    """OPTIONS preflight passes without a JWT, even with auth on, and allows the needed headers."""
    app = create_app(
        with_settings(settings, auth=True, jwt_issuers={SANDBOX: "http://127.0.0.1:9/jwks.json"}),
        clock=clock,
    )
    response = app.test_client().options(
        path,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    dispose(app)
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", SANDBOX)
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_cors_headers_on_success_and_on_errors(client):
    """Actual responses, including 4xx errors, carry CORS headers so the browser can read them."""
    ok = client.get("/cds-services", headers={"Origin": SANDBOX})
    bad = client.post(
        f"/cds-services/{FOOTDROP}",
        data="{",
        headers={"Origin": SANDBOX},
        content_type="application/json",
    )
    missing = client.post("/cds-services/nope", json={}, headers={"Origin": SANDBOX})
    for response in (ok, bad, missing):
        assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    assert bad.status_code == 400 and missing.status_code == 404


def test_cors_origins_are_configurable(settings, clock):
    """With an origin list, a listed origin is allowed and an unlisted one gets no CORS grant."""
    app = create_app(with_settings(settings, cors_origins=(SANDBOX,)), clock=clock)
    client = app.test_client()
    listed = client.get("/cds-services", headers={"Origin": SANDBOX})
    other = client.get("/cds-services", headers={"Origin": "https://evil.example"})
    dispose(app)
    assert listed.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert "Access-Control-Allow-Origin" not in other.headers


def test_healthz_reports_process_database_and_version(client):
    """/healthz says the process is up, the database answers, the version, and replay is off."""
    from cds_service import __version__

    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "version": __version__,
        "database": "ok",
        "replay": "off",
    }


def test_openapi_documents_every_route_with_the_validation_schemas(client, app):
    """/openapi.json is OpenAPI 3.1, lists every API route (the development page is no API),
    and embeds the validation schemas."""
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    routes = {
        rule.rule.replace("<service_id>", "{service_id}")
        for rule in app.url_map.iter_rules()
        if not rule.endpoint.startswith("devpage.")
    }
    routes.discard("/static/<path:filename>")
    # the SMART app's HTML pages (/app/...) are a browser app, not part of the JSON API
    routes = {route for route in routes if not route.startswith("/app/")}
    assert routes <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert schemas["HookRequest"]["required"] == ["hook", "hookInstance", "context"]
    assert "HookResponse_card" in schemas


def test_openapi_schemas_resolve_and_validate_real_bodies(client):
    """Every $ref in the OpenAPI document resolves, and a real request validates against it."""
    document = client.get("/openapi.json").get_json()
    registry = Registry().with_resource("urn:openapi", Resource.opaque(document))
    request_schema = {"$ref": "urn:openapi#/components/schemas/HookRequest"}
    validator = Draft202012Validator(request_schema, registry=registry)
    assert list(validator.iter_errors(patient_view_request())) == []
    assert list(validator.iter_errors({"hook": 1}))
    text = json.dumps(document)
    assert "#/$defs/" not in text


def test_request_logs_are_json_without_phi(settings, clock):
    """A hook call logs hookInstance, service, status and timing, and no names or identifiers."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cds_service")
    logger.addHandler(handler)
    try:
        app = create_app(settings, clock=clock)
        request = patient_view_request(patient_id="pat-secret-4711")
        request["prefetch"]["patient"]["name"] = [{"family": "Pseudonymovich"}]
        app.test_client().post(f"/cds-services/{FOOTDROP}", json=request)
        dispose(app)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [line for line in lines if line.get("event") == "request"]
    assert handled and handled[-1]["hook_instance"] == request["hookInstance"]
    assert handled[-1]["service_id"] == FOOTDROP
    assert handled[-1]["status"] == 200 and handled[-1]["duration_ms"] >= 0
    text = stream.getvalue()
    assert "pat-secret-4711" not in text and "Pseudonymovich" not in text


def test_json_formatter_drops_fields_outside_the_allow_list():
    """A log call that passes a resource by mistake does not write it."""
    record = logging.LogRecord("cds_service", logging.INFO, __file__, 1, "x", None, None)
    record.resource = {"name": "Jane"}
    record.status = 200
    line = json.loads(JsonFormatter().format(record))
    assert line["status"] == 200 and "resource" not in line


def test_startup_names_every_insecure_setting(settings, clock):
    """Start-up writes one loud line naming each insecure setting in force."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("cds_service")
    logger.addHandler(handler)
    try:
        dispose(create_app(settings, clock=clock))
    finally:
        logger.removeHandler(handler)
    warnings = [json.loads(x) for x in stream.getvalue().splitlines() if "INSECURE" in x]
    assert len(warnings) == 1
    assert any("CDS_AUTH=off" in item for item in warnings[0]["settings"])


def test_unexpected_error_is_a_json_500_without_traceback(app, client, monkeypatch):
    """A bug inside a handler becomes a JSON 500 with no traceback or message leaked."""
    runner = app.extensions["cds_runtime"].runner

    def explode(*_args, **_kwargs):
        raise KeyError("Jane Doe")

    monkeypatch.setattr(runner, "run", explode)
    response = client.post(f"/cds-services/{FOOTDROP}", json=patient_view_request())
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}
    assert "Jane" not in response.get_data(as_text=True)


def test_dockerfile_runs_as_non_root_with_healthcheck_and_shared_gunicorn_config():
    """The image is multi-stage, runs as non-root, ships cards/ in the wheel, checks /healthz."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2
    assert "USER cds" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert "COPY cds_service" in dockerfile and "COPY cards" not in dockerfile
    assert "CDS_CONTENT_DIR=" not in dockerfile  # the packaged content is the default
    assert 'CMD ["cds-service", "serve"]' in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "cds-service serve" in makefile
