"""footdrop-cds: a CDS Hooks 2.0 service for foot drop after an intramuscular injection.

``create_app`` only wires things: settings, content, store, FHIR client, JWT verifier, routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from flask import Flask
from flask_cors import CORS

from cds_service.config import Settings

log = logging.getLogger("cds_service")

try:
    __version__ = version("footdrop-cds")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None
) -> Flask:
    """Build the WSGI app. ``clock`` is for tests that evaluate fixtures at their own time."""
    from cds_service.domain.prefetch_templates import fill_template
    from cds_service.domain.services import ServiceSpecError
    from cds_service.edge.content import load_content
    from cds_service.edge.database import make_engine
    from cds_service.edge.discovery import load_services
    from cds_service.edge.feedback_store import FeedbackStore
    from cds_service.edge.fhir_client import FetchPolicy, FhirClient
    from cds_service.logs import configure_logging
    from cds_service.web.api import bp
    from cds_service.web.errors import register_error_handlers
    from cds_service.web.handlers import build_handlers
    from cds_service.web.hooks import HookRunner
    from cds_service.web.openapi import build_openapi
    from cds_service.web.runtime import Runtime

    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    content = load_content(settings.content_dir)
    services = load_services(settings.content_dir)
    handlers = build_handlers(content, settings)
    unhandled = sorted({spec.id for spec in services} - set(handlers))
    if unhandled:
        raise ServiceSpecError(f"services.yaml names services with no handler: {unhandled}")
    engine = make_engine(settings.database_url)
    store = FeedbackStore(engine)
    store.create_schema()
    fetcher = FhirClient(
        FetchPolicy(
            timeout_seconds=settings.fhir_timeout_seconds,
            deadline_seconds=settings.fhir_deadline_seconds,
            max_pages=settings.fhir_max_pages,
            max_workers=settings.fhir_max_workers,
            allow_insecure=settings.allow_insecure_fhir,
        )
    )
    runner = HookRunner(handlers, fetcher, fill_template)
    runtime = Runtime(
        settings=settings,
        services=services,
        store=store,
        runner=runner,
        clock=clock or utc_now,
        openapi=build_openapi(__version__, sorted({s.id for s in services})),
    )
    if settings.auth:
        from cds_service.edge.jwt_auth import JwtPolicy, JwtVerifier
        from cds_service.edge.replay_guard import SqlReplayGuard

        runtime.verifier = JwtVerifier(
            JwtPolicy(
                issuers=settings.jwt_issuers,
                algorithms=settings.jwt_algorithms,
                leeway_seconds=settings.jwt_leeway_seconds,
            ),
            SqlReplayGuard(make_engine(settings.database_url, durable=False)),
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions["cds_runtime"] = runtime
    app.register_blueprint(bp)
    register_error_handlers(app)
    CORS(
        app,
        resources={r"/cds-services*": {}, r"/healthz": {}, r"/openapi.json": {}},
        origins=list(settings.cors_origins),
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
        supports_credentials=False,
    )
    insecure = settings.insecure_settings()
    if insecure:
        log.warning(
            "INSECURE SETTINGS IN FORCE: " + " | ".join(insecure),
            extra={"event": "startup", "settings": insecure},
        )
    log.info(
        "started",
        extra={"event": "startup", "count": len(services)},
    )
    return app
