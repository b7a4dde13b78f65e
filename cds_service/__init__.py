"""footdrop-cds: a CDS Hooks 2.0 service for foot drop after an intramuscular injection.

``create_app`` only wires things: settings, content, store, FHIR client, JWT verifier, routes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask
from flask_cors import CORS

from cds_service.config import Settings, SettingsError
from cds_service.errors import StartupError

if TYPE_CHECKING:
    from cds_service.domain.content import Content
    from cds_service.domain.services import ServiceSpec
    from cds_service.edge.feedback_store import FeedbackStore
    from cds_service.edge.replay_guard import ReplayGuard

log = logging.getLogger("cds_service")

try:
    __version__ = version("footdrop-cds")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_content_and_services(directory: Path) -> tuple[Content, tuple[ServiceSpec, ...]]:
    """The card content and discovery, or a one-line :class:`StartupError` saying what is wrong."""
    from cds_service.domain.services import ServiceSpecError
    from cds_service.edge.content import ContentError, load_content
    from cds_service.edge.discovery import load_services

    try:
        content = load_content(directory)
        services = load_services(directory)
    except ContentError as error:
        problems = list(error.problems)
        raise StartupError(
            f"card content in {directory} has {len(problems)} problem(s), first: {problems[0]} "
            "(run `cds-service check-content` for all)"
        ) from None
    except ServiceSpecError as error:
        raise StartupError(f"discovery in {directory}: {error}") from None
    return content, services


def open_feedback_store(database_url: str) -> FeedbackStore:
    """The feedback store with its tables, or a one-line :class:`StartupError`."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.edge.database import StoreUnavailableError, make_engine
    from cds_service.edge.feedback_store import FeedbackStore

    where = _redacted(database_url)
    try:
        store = FeedbackStore(make_engine(database_url))
    except (OSError, SQLAlchemyError, ImportError) as error:
        raise StartupError(f"database {where}: {_reason(error)}") from None
    try:
        store.create_schema()
    except (StoreUnavailableError, OSError, SQLAlchemyError) as error:
        store.dispose()
        cause = error.__cause__ or error
        raise StartupError(f"database {where} unusable: {_reason(cause)}") from None
    return store


def open_replay_guard(database_url: str) -> ReplayGuard:
    """The JWT replay store (its own engine or client, short waits), or a one-line
    :class:`StartupError`: SQLite or PostgreSQL (:class:`SqlReplayGuard`), Redis or Valkey."""
    from sqlalchemy.exc import SQLAlchemyError

    from cds_service.edge.database import REPLAY_WAIT_SECONDS, make_engine
    from cds_service.edge.replay_guard import SqlReplayGuard

    if database_url.split(":", 1)[0].lower() in REDIS_SCHEMES:
        return _open_redis_guard(database_url, REPLAY_WAIT_SECONDS)
    engine = None
    try:
        engine = make_engine(database_url, durable=False, wait_seconds=REPLAY_WAIT_SECONDS)
        return SqlReplayGuard(engine, wait_seconds=REPLAY_WAIT_SECONDS)
    except (OSError, SQLAlchemyError, ImportError) as error:
        if engine is not None:
            engine.dispose()
        raise StartupError(f"replay store {_redacted(database_url)}: {_reason(error)}") from None


#: URL schemes of a Redis or Valkey replay store (``CDS_REPLAY_URL``).
REDIS_SCHEMES = ("redis", "rediss", "unix")


def _open_redis_guard(url: str, wait_seconds: float) -> ReplayGuard:
    from urllib.parse import urlsplit

    from cds_service.edge.replay_redis import open_redis_guard

    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    try:
        return open_redis_guard(url, wait_seconds)
    except ImportError as error:
        raise StartupError(f"replay store {where}: {error}") from None
    except Exception as error:  # redis' own errors (unreachable, refused, bad password)
        raise StartupError(f"replay store {where}: {_reason(error)}") from None


def _redacted(database_url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _reason(error: BaseException) -> str:
    """The first line of an exception's message, without SQLAlchemy's background links."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()
    return text[0] if text else type(error).__name__


def create_app(
    settings: Settings | None = None, *, clock: Callable[[], datetime] | None = None
) -> Flask:
    """Build the WSGI app. ``clock`` is for tests that evaluate fixtures at their own time."""
    from cds_service.domain.prefetch_templates import fill_template
    from cds_service.domain.services import ServiceSpecError
    from cds_service.edge.fhir_client import FetchPolicy, FhirClient
    from cds_service.logs import configure_logging
    from cds_service.web.api import bp
    from cds_service.web.errors import register_error_handlers
    from cds_service.web.handlers import build_handlers
    from cds_service.web.hooks import HookRunner
    from cds_service.web.metrics_view import bp as metrics_bp
    from cds_service.web.openapi import build_openapi
    from cds_service.web.runtime import Runtime

    settings = settings or Settings.from_env()
    refused = settings.production_problems()  # also for Settings built without from_env
    if refused:
        raise SettingsError("; ".join(refused))
    if not settings.is_production:  # imported here, before any background thread starts
        from cds_service.web.devpage import bp as devpage
    configure_logging(settings.log_level)
    content, services = load_content_and_services(settings.content_dir)
    handlers = build_handlers(content, settings)
    unhandled = sorted({spec.id for spec in services} - set(handlers))
    if unhandled:
        raise ServiceSpecError(f"services.yaml names services with no handler: {unhandled}")
    store = open_feedback_store(settings.database_url)
    fetcher = FhirClient(
        FetchPolicy(
            timeout_seconds=settings.fhir_timeout_seconds,
            deadline_seconds=settings.fhir_deadline_seconds,
            max_pages=settings.fhir_max_pages,
            max_workers=settings.fhir_max_workers,
            allow_insecure=settings.allow_insecure_fhir,
            max_body_bytes=min(4 * 1024 * 1024, settings.fhir_max_bytes_per_hook),
            max_bytes_per_call=settings.fhir_max_bytes_per_hook,
            max_per_origin=settings.fhir_max_per_origin,
            allowed_networks=settings.fhir_allowed_networks,
            # With auth on, each verified issuer may only name its own FHIR servers.
            issuer_origins=settings.fhir_origins if settings.auth else None,
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

        runtime.verifier = JwtVerifier(
            JwtPolicy(
                issuers=settings.jwt_issuers,
                algorithms=settings.jwt_algorithms,
                leeway_seconds=settings.jwt_leeway_seconds,
                jku=settings.jwt_jku,
            ),
            open_replay_guard(settings.replay_url),
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions["cds_runtime"] = runtime
    app.register_blueprint(bp)
    app.register_blueprint(metrics_bp)
    if not settings.is_production:  # the development page and card preview; "/" 404s otherwise
        app.register_blueprint(devpage)
    register_error_handlers(app)
    from cds_service.app import init_app as init_smart_app
    from cds_service.web.handlers import policy_for

    init_smart_app(app, settings, content, policy_for(settings), services, runtime.clock)
    runtime.closers.append(app.extensions["cds_app"].fetcher.close)
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
    if runtime.verifier is not None:
        runtime.verifier.start()  # fetch the JWK Sets now, in the background
    log.info(
        "started",
        extra={"event": "startup", "count": len(services), "version": __version__},
    )
    return app
