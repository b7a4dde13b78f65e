"""The rule trace the page renders: the engine's own (``explain_patient_view``).

The card and the page come from the same function over the same FHIR data, so they never
disagree; the app recomputes it on every page view (it needs no ``appContext``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cds_service.domain.content import Content
from cds_service.domain.policy import Policy
from cds_service.domain.trace import explain_patient_view

__all__ = ["explain"]


def explain(
    context: Mapping[str, Any],
    resources: Sequence[Mapping[str, Any]],
    content: Content,
    now: datetime,
    hook_instance: str,
    policy: Policy,
) -> dict[str, Any]:
    """The trace dict of the patient's foot-drop evaluation at ``now``."""
    explanation = explain_patient_view(context, resources, content, now, hook_instance, policy)
    return explanation.trace
