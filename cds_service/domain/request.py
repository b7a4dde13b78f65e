"""The CDS Hooks request as the domain sees it: a small immutable object, built after validation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HookRequest:
    """A schema-valid hook call. The access token is transient: kept out of ``repr`` and logs."""

    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    prefetch: Mapping[str, Any]
    fhir_server: str | None = None
    access_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HookRequest:
        """Build from a body that already passed the hook-request schema."""
        authorization = body.get("fhirAuthorization") or {}
        server = body.get("fhirServer")
        return cls(
            hook=body["hook"],
            hook_instance=body["hookInstance"],
            context=body["context"],
            prefetch=body.get("prefetch") or {},
            fhir_server=server.rstrip("/") if server else None,
            access_token=authorization.get("access_token"),
        )

    @property
    def patient_id(self) -> str | None:
        value = self.context.get("patientId")
        return value if isinstance(value, str) else None
