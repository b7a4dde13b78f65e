"""Load the discovery declaration (``cards/services.yaml``) and check its prefetch templates."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cds_service.domain.prefetch_templates import TemplateError, validate_template
from cds_service.domain.services import ServiceSpec, ServiceSpecError, parse_services
from cds_service.edge.content import ContentError, parse_yaml

# Root-level primitive context fields per hook: the only context fields usable as prefetch tokens.
TOKEN_FIELDS = {
    "patient-view": ("userId", "patientId", "encounterId"),
    "order-select": ("userId", "patientId", "encounterId"),
    "order-sign": ("userId", "patientId", "encounterId"),
}


def load_services(
    content_dir: Path, document: Mapping[str, Any] | None = None
) -> tuple[ServiceSpec, ...]:
    """Parse and check ``services.yaml``; raises ServiceSpecError naming the problem.

    ``document`` is the already parsed file (``check_content`` parses every file once).
    """
    path = Path(content_dir) / "services.yaml"
    if document is None:
        try:
            document = parse_yaml(path, name=str(path))
        except ContentError as error:
            raise ServiceSpecError(error.problems[0]) from None
    if not isinstance(document, Mapping):
        raise ServiceSpecError(f"{path}: must be a mapping with a 'services' list")
    services = parse_services(document)
    for spec in services:
        fields = TOKEN_FIELDS.get(spec.hook, ("userId", "patientId", "encounterId"))
        for item in spec.prefetch:
            try:
                validate_template(item.query, fields)
            except TemplateError as error:
                raise ServiceSpecError(f"{spec.id}.prefetch.{item.key}: {error}") from None
    return services
