"""What the app's requests share: settings, engine content and policy, cookie keys, FHIR reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from cds_service.app.errors import AppError
from cds_service.app.session import SessionBox
from cds_service.app.smart import ClientConfig
from cds_service.config import Settings
from cds_service.domain.content import Content
from cds_service.domain.mrc import MrcCodes
from cds_service.domain.policy import Policy
from cds_service.domain.prefetch import with_page_size
from cds_service.domain.prefetch_templates import fill_template
from cds_service.domain.services import ServiceSpec
from cds_service.edge.fhir_client import FhirClient, is_loopback_host, parse_base_url

PAGE_SIZE = 200
TIMEOUT_REASONS = frozenset({"timeout", "deadline"})


@dataclass
class AppRuntime:
    """Built once by :func:`cds_service.app.init_app`."""

    settings: Settings
    content: Content
    policy: Policy
    spec: ServiceSpec  # the patient-view service: its prefetch queries are what the app reads
    fetcher: FhirClient
    clock: Callable[[], datetime]
    #: The cookie secret, read on first use: an app that never serves /app (``cds-service
    #: call``) writes no ``var/app-secret``.
    secret: Callable[[], str]
    client: ClientConfig

    @cached_property
    def launch_box(self) -> SessionBox:
        return SessionBox(self.secret(), "launch")

    @cached_property
    def session_box(self) -> SessionBox:
        return SessionBox(self.secret(), "session")

    @property
    def mrc_codes(self) -> MrcCodes:
        return self.policy.mrc(self.content)

    @property
    def resource_types(self) -> list[str]:
        """The FHIR types the engine reads (scopes ask for these and no others)."""
        return sorted({p.query.split("?", 1)[0].split("/", 1)[0] for p in self.spec.prefetch})

    def public_base_url(self, host_url: str) -> str:
        return (self.settings.public_url or host_url).rstrip("/")

    def iss_allowed(self, iss: str) -> bool:
        """Only FHIR servers of ``CDS_FHIR_ORIGINS``; outside production, with the list empty,
        any http(s) base (plain http only where insecure FHIR is allowed or on loopback)."""
        target = parse_base_url(iss)
        if target is None:
            return False
        bases = {b.rstrip("/") for bases in self.settings.fhir_origins.values() for b in bases}
        if bases:
            return iss.rstrip("/") in bases
        if self.settings.is_production:
            return False
        return (
            target.scheme == "https"
            or self.settings.allow_insecure_fhir
            or (is_loopback_host(target.host))
        )

    def read_patient(self, iss: str, token: str, patient: str) -> list[dict[str, Any]]:
        """Every resource the engine reads for ``patient``, with the SMART access token."""
        queries = {
            p.key: with_page_size(fill_template(p.query, {"patientId": patient}), PAGE_SIZE)
            for p in self.spec.prefetch
        }
        result = self.fetcher.fetch(iss, token, queries)
        missing = {k: v for k, v in result.failures.items() if k in self.spec.required_keys}
        if missing:
            reasons = set(missing.values())
            if reasons <= TIMEOUT_REASONS:
                raise AppError(504, "The FHIR server did not answer in time: try again shortly.")
            if reasons & {"http 401", "http 403"}:
                raise AppError(401, "The FHIR server no longer accepts this session: launch "
                               "the app again.")  # fmt: skip
            raise AppError(502, "The FHIR server could not be read: the page cannot be shown.")
        return [r for p in self.spec.prefetch for r in result.resources.get(p.key, ())]
