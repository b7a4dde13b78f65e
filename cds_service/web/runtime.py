"""Everything a request needs, built once by the app factory and kept on the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from cds_service.config import Settings
from cds_service.domain.services import ServiceSpec
from cds_service.edge.feedback_store import FeedbackStore
from cds_service.edge.jwt_auth import JwtVerifier
from cds_service.web.hooks import HookRunner
from cds_service.web.jsonout import compact_json


@dataclass
class Runtime:
    """The wiring of one app: settings, services, store, runner, optional JWT verifier, clock."""

    settings: Settings
    services: tuple[ServiceSpec, ...]
    store: FeedbackStore
    runner: HookRunner
    clock: Callable[[], datetime]
    openapi: dict[str, Any]
    verifier: JwtVerifier | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)  # e.g. the app's FHIR reader

    def close(self) -> None:
        """Release pooled database connections, the FHIR client's threads and sockets, and the
        JWKS refresher threads."""
        self.store.dispose()
        self.runner.close()
        for close in self.closers:
            close()
        if self.verifier is not None:
            self.verifier.close()
            self.verifier.replay_guard.dispose()

    @cached_property
    def discovery_json(self) -> bytes:
        """The discovery document, serialised once (it never changes while the app runs)."""
        return compact_json({"services": [spec.discovery_entry() for spec in self.services]})

    @cached_property
    def openapi_json(self) -> bytes:
        """The OpenAPI document, serialised once."""
        return compact_json(self.openapi)

    def public_base_url(self, host_url: str) -> str:
        """The base URL clients call us by: CDS_PUBLIC_URL behind a proxy, else the Host header."""
        return (self.settings.public_url or host_url).rstrip("/")
