"""Load the discovery declaration (``cards/services.yaml``) and check its prefetch templates."""

from __future__ import annotations

from pathlib import Path

import yaml

from cds_service.domain.prefetch_templates import TemplateError, validate_template
from cds_service.domain.services import ServiceSpec, ServiceSpecError, parse_services

# Root-level primitive context fields per hook: the only context fields usable as prefetch tokens.
TOKEN_FIELDS = {
    "patient-view": ("userId", "patientId", "encounterId"),
    "order-select": ("userId", "patientId", "encounterId"),
    "order-sign": ("userId", "patientId", "encounterId"),
}


def load_services(content_dir: Path) -> tuple[ServiceSpec, ...]:
    """Parse and check ``services.yaml``; raises ServiceSpecError naming the problem."""
    path = content_dir / "services.yaml"
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except OSError as error:
        raise ServiceSpecError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ServiceSpecError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(document, dict):
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
