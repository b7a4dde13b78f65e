"""Bind each service id to the domain function that answers it, with content and policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import has_request_context
from flask import request as http_request

from cds_service.config import Settings
from cds_service.domain.engine import Evaluation, Policy, evaluate_patient_view
from cds_service.domain.prevention import evaluate_prevention
from cds_service.domain.request import HookRequest
from cds_service.edge.content import load_mrc_codes
from cds_service.web.hooks import Handler

FOOTDROP_SERVICE_ID = "footdrop-im-injection"
SITE_SELECT_SERVICE_ID = "im-injection-site-select"
SITE_SIGN_SERVICE_ID = "im-injection-site-sign"


def policy_for(settings: Settings) -> Policy:
    """The engine's local policy from the settings (also used by ``cds-service call --explain``).

    The card's SMART link (R9a) points at ``CDS_PUBLIC_URL`` + ``/app/launch``; without a public
    URL there is no link to the app here (a served call outside production takes the host it was
    called on, as the JWT audience does: see ``build_handlers``).
    """
    return Policy(
        order_intent=settings.order_intent,
        site_time_zone=settings.site_timezone,
        mrc_code_system=settings.mrc_code_system,
        mrc_rows=load_mrc_codes(settings.mrc_codes_file) if settings.mrc_codes_file else None,
        app_launch_url=f"{settings.public_url.rstrip('/')}/app/launch"
        if settings.public_url
        else None,
    )


def build_handlers(content: Any, settings: Settings) -> dict[str, Handler]:
    """Handlers by service id; discovery (services.yaml) names which ids exist."""
    policy = policy_for(settings)
    # Outside production CDS_PUBLIC_URL may be unset: the link then names the host the client
    # called (the development preview and the sandbox show it too). Production requires the URL.
    host_linked = policy.app_launch_url is None and not settings.is_production

    def patient_view(
        request: HookRequest, resources: Sequence[Mapping[str, Any]], now: datetime
    ) -> Evaluation:
        local = policy
        if host_linked and has_request_context():
            local = replace(policy, app_launch_url=f"{http_request.host_url}app/launch")
        return evaluate_patient_view(
            request.context, resources, content, now, request.hook_instance, local
        )

    def prevention(mode: str) -> Handler:
        """The injection-site check of ``mode`` (the hook: order-select judges the selections)."""

        def handle(
            request: HookRequest, resources: Sequence[Mapping[str, Any]], now: datetime
        ) -> Evaluation:
            return evaluate_prevention(
                mode, request.context, resources, content, now, request.hook_instance
            )

        return handle

    return {
        FOOTDROP_SERVICE_ID: patient_view,
        SITE_SELECT_SERVICE_ID: prevention("order-select"),
        SITE_SIGN_SERVICE_ID: prevention("order-sign"),
    }
