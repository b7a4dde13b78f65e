"""The evidence and timeline page: a SMART App Launch 2.x app served at ``/app``.

``init_app`` wires it into the service's Flask app; the parts are ``smart`` (OAuth client side),
``session`` (the encrypted cookie), ``recompute`` (the engine's trace), ``page`` (the plot),
``record`` (writing today's grades) and ``views`` (the routes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flask import Flask

from cds_service.config import Settings
from cds_service.domain.content import Content
from cds_service.domain.policy import Policy
from cds_service.domain.services import ServiceSpec

__all__ = ["init_app"]

PATIENT_VIEW_SERVICE = "footdrop-im-injection"


def app_secret(settings: Settings) -> str:
    """``CDS_APP_SECRET``; outside production a random one kept in ``var/`` (shared by workers)."""
    from cds_service.app.session import development_secret

    if settings.app_secret:
        return settings.app_secret
    return development_secret(Path.cwd() / "var")


def init_app(
    app: Flask,
    settings: Settings,
    content: Content,
    policy: Policy,
    services: tuple[ServiceSpec, ...],
    clock: Callable[[], datetime],
) -> None:
    """Register the ``/app`` blueprint with its own FHIR reader (longer limits than a hook's)."""
    from cds_service.app.runtime import AppRuntime
    from cds_service.app.smart import ClientConfig
    from cds_service.app.views import bp
    from cds_service.edge.fhir_client import FetchPolicy, FhirClient

    spec = next(s for s in services if s.id == PATIENT_VIEW_SERVICE)
    secret = settings.app_client_secret
    if settings.app_client_auth == "private_key_jwt" and settings.app_private_key_file:
        secret = settings.app_private_key_file.read_text("ascii")
    fetcher = FhirClient(
        FetchPolicy(
            timeout_seconds=max(settings.fhir_timeout_seconds, 5.0),
            deadline_seconds=max(settings.fhir_deadline_seconds, 15.0),
            max_pages=settings.fhir_max_pages,
            max_workers=16,
            allow_insecure=settings.allow_insecure_fhir,
            max_body_bytes=min(4 * 1024 * 1024, settings.fhir_max_bytes_per_hook),
            max_bytes_per_call=settings.fhir_max_bytes_per_hook,
            max_per_origin=settings.fhir_max_per_origin,
            allowed_networks=settings.fhir_allowed_networks,
        )
    )
    app.extensions["cds_app"] = AppRuntime(
        settings=settings,
        content=content,
        policy=policy,
        spec=spec,
        fetcher=fetcher,
        clock=clock,
        secret=lambda: app_secret(settings),
        client=ClientConfig(settings.app_client_id, settings.app_client_auth, secret),
    )
    app.register_blueprint(bp)
