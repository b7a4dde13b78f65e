"""Run one hook call: gather the data (prefetch, else the client's FHIR server), then the domain.

CDS Hooks 2.0 §4 decision tree per prefetch key: usable prefetch → use it; ``null`` → known empty;
absent or OperationOutcome → fetch from ``fhirServer``; still missing and required → 412.
"""

from __future__ import annotations

import logging
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
        self, fhir_server: str, access_token: str | None, queries: Mapping[str, str]
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

    def run(self, spec: ServiceSpec, request: HookRequest, now: datetime) -> HookOutcome:
        plan = plan_prefetch(request.prefetch, spec.prefetch_keys)
        gathered = dict(plan.resources)
        wanted = list(plan.to_fetch)
        if request.fhir_server:
            wanted += [key for key in plan.paginated if key not in wanted]
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
                result = self._fetcher.fetch(request.fhir_server, request.access_token, queries)
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
            raise ApiError(
                412,
                "required FHIR data unavailable",
                [f"{key}: {failures[key]}" for key in missing_required],
            )
        resources = [resource for key in spec.prefetch_keys for resource in gathered.get(key, ())]
        evaluation = self._handlers[spec.id](request, resources, now)
        # No service emits systemActions, so the optional array is never sent (never empty).
        return HookOutcome(
            body={"cards": list(evaluation.cards)},
            cards=len(evaluation.cards),
            resources=evaluation.resources_read,
            skipped=evaluation.resources_skipped,
            fetched_keys=fetched,
            fetch_failures={k: v for k, v in failures.items() if k not in gathered},
        )
