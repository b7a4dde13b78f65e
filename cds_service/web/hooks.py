"""Run one hook call: gather the data (prefetch, else the client's FHIR server), then the domain.

CDS Hooks 2.0 §4 decision tree per prefetch key: usable prefetch → use it; ``null`` → known empty;
absent or OperationOutcome → fetch from ``fhirServer``; still missing and required → 412.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cds_service.domain.prefetch import plan_prefetch, with_page_size
from cds_service.domain.request import HookRequest
from cds_service.domain.services import ServiceSpec
from cds_service.web.errors import ApiError

log = logging.getLogger("cds_service.hooks")

FETCH_PAGE_SIZE = 200


class Fetcher(Protocol):
    """What the runner needs from the FHIR client (edge): fetch filled queries by key."""

    def fetch(
        self,
        fhir_server: str,
        access_token: str | None,
        queries: Mapping[str, str],
        *,
        issuer: str | None = None,
        hook_instance: str | None = None,
    ) -> Any: ...

    def close(self) -> None:
        """Release the connection pool and worker threads."""


# A service handler: the request, every resource gathered (flattened), and the evaluation time.
Handler = Callable[[HookRequest, Sequence[Mapping[str, Any]], datetime], Any]
TemplateFiller = Callable[[str, Mapping[str, Any]], str]


@dataclass
class HookOutcome:
    """The JSON body to answer with, and counts for the log line."""

    body: dict[str, Any]
    cards: int
    resources: int
    skipped: int
    fetched_keys: int = 0
    fetch_failures: dict[str, str] = field(default_factory=dict)


class HookRunner:
    """Gathers data for a service call and hands it to the service's handler."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        fetcher: Fetcher,
        fill_template: TemplateFiller,
    ) -> None:
        self._handlers = handlers
        self._fetcher = fetcher
        self._fill_template = fill_template

    def close(self) -> None:
        """Stop the FHIR client's threads and close its pooled connections."""
        self._fetcher.close()

    def run(
        self, spec: ServiceSpec, request: HookRequest, now: datetime, *, issuer: str | None = None
    ) -> HookOutcome:
        """Gather, then evaluate. ``issuer``: the verified ``iss`` (None with auth off)."""
        plan = plan_prefetch(request.prefetch, spec.prefetch_keys)
        gathered = dict(plan.resources)
        wanted = list(plan.to_fetch)
        failures: dict[str, str] = {key: "not prefetched" for key in wanted}
        failures.update(plan.client_failures)
        fetched = 0
        if wanted and request.fhir_server:
            queries = {}
            for item in spec.prefetch:
                if item.key in wanted:
                    try:
                        filled = self._fill_template(item.query, request.context)
                    except ValueError:  # TemplateError: the context lacks a token's field
                        failures[item.key] = "prefetch template cannot be filled from context"
                        continue
                    queries[item.key] = with_page_size(filled, FETCH_PAGE_SIZE)
            if queries:
                result = self._fetcher.fetch(
                    request.fhir_server,
                    request.access_token,
                    queries,
                    issuer=issuer,
                    hook_instance=request.hook_instance,
                )
                for key, resources in result.resources.items():
                    gathered[key] = resources
                    failures.pop(key, None)
                    fetched += 1
                failures.update(result.failures)
        elif wanted and not request.fhir_server:
            failures.update({key: f"{failures[key]} and no fhirServer given" for key in wanted})
        missing_required = sorted(
            key for key in spec.required_keys if key not in gathered and key in failures
        )
        if missing_required:
            # The precise cause goes to the log only: in the answer it would be an oracle on the
            # network behind fhirServer ("connection error", "http 404", "timeout", ...).
            log.warning(
                "required FHIR data unavailable",
                extra={
                    "event": "prefetch",
                    "hook_instance": request.hook_instance,
                    "status": 412,
                    "fetch_failures": {key: failures[key] for key in missing_required},
                },
            )
            raise ApiError(
                412,
                "required FHIR data unavailable",
                [f"{key}: unavailable" for key in missing_required],
            )
        resources = [resource for key in spec.prefetch_keys for resource in gathered.get(key, ())]
        started = time.perf_counter()
        evaluation = self._handlers[spec.id](request, resources, now)
        if log.isEnabledFor(logging.DEBUG):  # CDS_LOG_LEVEL=DEBUG: what was used, no values
            _log_evaluation(spec, request, plan.resources, failures, evaluation, started)
        # No service emits systemActions, so the optional array is never sent (never empty).
        return HookOutcome(
            body={"cards": list(evaluation.cards)},
            cards=len(evaluation.cards),
            resources=evaluation.resources_read,
            skipped=evaluation.resources_skipped,
            fetched_keys=fetched,
            fetch_failures={k: v for k, v in failures.items() if k not in gathered},
        )


def _log_evaluation(
    spec: ServiceSpec,
    request: HookRequest,
    prefetched: Mapping[str, Any],
    failures: Mapping[str, str],
    evaluation: Any,
    started: float,
) -> None:
    """The DEBUG line: prefetch keys used and missing, card indicators, rule time; no PHI."""
    cards = list(evaluation.cards)
    log.debug(
        "hook evaluated",
        extra={
            "event": "evaluate",
            "hook_instance": request.hook_instance,
            "service_id": spec.id,
            "prefetched": sorted(prefetched),
            "missing": sorted(failures),
            "resources": evaluation.resources_read,
            "skipped": evaluation.resources_skipped,
            "indicators": [card.get("indicator") for card in cards],
            "suggestions": sum(len(card.get("suggestions", ())) for card in cards),
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
