"""``cds-service call --explain``: the rule trace of a patient-view request, without an EHR.

Reads the request's prefetch exactly as the service does (CDS Hooks 2.0 §4: ``null`` is known
empty, a Bundle is flattened) and runs the same pure function the service answers with, so the
card printed here is the card the service returns. Keys the file does not carry are not fetched:
they are named on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cds_service.config import Settings
from cds_service.errors import OperatorError

FOOTDROP_SERVICE_ID = "footdrop-im-injection"


def explain(settings: Settings, request: Any, now: datetime, *, as_json: bool) -> str:
    """The trace of one patient-view request as text (or JSON with the cards)."""
    from cds_service import load_content_and_services
    from cds_service.domain.prefetch import plan_prefetch
    from cds_service.domain.trace import explain_patient_view
    from cds_service.domain.trace_text import trace_text
    from cds_service.web.handlers import policy_for

    if not isinstance(request, Mapping) or request.get("hook") != "patient-view":
        raise OperatorError("call --explain: the request must be a patient-view hook request")
    context = request.get("context")
    if not isinstance(context, Mapping) or not isinstance(context.get("patientId"), str):
        raise OperatorError("call --explain: the request has no context.patientId")
    prefetch = request.get("prefetch")
    if not isinstance(prefetch, Mapping):
        prefetch = {}
    content, services = load_content_and_services(settings.content_dir)
    spec = next((s for s in services if s.id == FOOTDROP_SERVICE_ID), None)
    if spec is None:
        raise OperatorError(f"call --explain: no service {FOOTDROP_SERVICE_ID} in discovery")
    plan = plan_prefetch(prefetch, spec.prefetch_keys)
    if plan.to_fetch:
        print(
            "cds-service: --explain does not fetch; not in the request: "
            + ", ".join(plan.to_fetch),
            file=sys.stderr,
        )
    resources = [r for key in spec.prefetch_keys for r in plan.resources.get(key, ())]
    hook_instance = str(request.get("hookInstance") or "explain")
    explained = explain_patient_view(
        context, resources, content, now, hook_instance, policy_for(settings)
    )
    if as_json:
        return json.dumps(
            {"cards": explained.cards, "trace": explained.trace}, indent=2, ensure_ascii=False
        )
    return trace_text(explained.trace, explained.cards)
