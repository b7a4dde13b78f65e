"""The clinical decision engine: one patient-view request in, at most one card out.

``evaluate_patient_view`` is the only entry point the web layer calls. It is pure (``now`` and the
content are passed in), dispatches on ``resourceType`` (never on the prefetch key), and never raises
on malformed input: a resource it cannot read is skipped and counted. It answers with the cards of
:func:`cds_service.domain.trace.explain_patient_view` — the one code path that also returns the
rule trace the app page shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.policy import DEFAULT_POLICY, ORDER_INTENTS, Policy
from cds_service.domain.trace import explain_patient_view

__all__ = ["ORDER_INTENTS", "Evaluation", "Policy", "evaluate_patient_view"]


@dataclass(frozen=True)
class Evaluation:
    cards: list[dict[str, Any]]  # JSON-ready CDS Hooks 2.0 cards (0 or 1 for patient-view)
    resources_read: int
    resources_skipped: int  # malformed resources: skipped and counted, never fatal


def evaluate_patient_view(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy = DEFAULT_POLICY,
) -> Evaluation:
    """Run R0-R9 over the flattened prefetch resources and build the card (if any)."""
    explained = explain_patient_view(context, resources, content, now, hook_instance, policy)
    return Evaluation(explained.cards, explained.resources_read, explained.resources_skipped)
