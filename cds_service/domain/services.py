"""The services this CDS server offers: their discovery entries and the code that answers each.

Discovery is data (``cards/services.yaml``); this module turns it into typed specs and binds each
service id to its handler, so adding a service is one YAML entry plus one function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KNOWN_HOOKS = frozenset(
    {
        "patient-view",
        "order-select",
        "order-sign",
        "order-dispatch",
        "appointment-book",
        "encounter-start",
        "encounter-discharge",
    }
)


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template and whether the card can be computed without its data."""

    key: str
    query: str
    required: bool


@dataclass(frozen=True)
class ServiceSpec:
    """One discovery entry (CDS Hooks 2.0 'Discovery' attributes) plus its prefetch needs."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...]
    usage_requirements: str | None = None

    def discovery_entry(self) -> dict[str, Any]:
        """The JSON object for ``GET /cds-services``; optional fields omitted when empty."""
        entry: dict[str, Any] = {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
        }
        if self.prefetch:
            entry["prefetch"] = {item.key: item.query for item in self.prefetch}
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry

    @property
    def prefetch_keys(self) -> tuple[str, ...]:
        return tuple(item.key for item in self.prefetch)

    @property
    def required_keys(self) -> frozenset[str]:
        return frozenset(item.key for item in self.prefetch if item.required)


class ServiceSpecError(ValueError):
    """The discovery data is malformed."""


def parse_services(document: Mapping[str, Any]) -> tuple[ServiceSpec, ...]:
    """Typed service specs from the parsed ``services.yaml``; raises ServiceSpecError."""
    raw_services = document.get("services")
    if not isinstance(raw_services, list) or not raw_services:
        raise ServiceSpecError("services.yaml: 'services' must be a non-empty list")
    specs = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_services):
        where = f"services[{index}]"
        if not isinstance(raw, Mapping):
            raise ServiceSpecError(f"{where}: must be a mapping")
        for name in ("id", "hook", "title", "description"):
            if not isinstance(raw.get(name), str) or not raw[name].strip():
                raise ServiceSpecError(f"{where}.{name}: required non-empty string")
        if not all(ch.isalnum() or ch in "-_." for ch in raw["id"]):
            raise ServiceSpecError(f"{where}.id: must be URL-path-safe")
        if raw["hook"] not in KNOWN_HOOKS and "." not in raw["hook"]:
            raise ServiceSpecError(f"{where}.hook: unknown hook {raw['hook']!r}")
        if (raw["id"], raw["hook"]) in seen:
            raise ServiceSpecError(f"{where}: duplicate id and hook")
        seen.add((raw["id"], raw["hook"]))
        prefetch = []
        for key, item in (raw.get("prefetch") or {}).items():
            if not isinstance(item, Mapping) or not isinstance(item.get("query"), str):
                raise ServiceSpecError(f"{where}.prefetch.{key}: needs a 'query' string")
            prefetch.append(PrefetchKey(str(key), item["query"], bool(item.get("required", True))))
        usage = raw.get("usageRequirements")
        specs.append(
            ServiceSpec(
                id=raw["id"],
                hook=raw["hook"],
                title=raw["title"].strip(),
                description=raw["description"].strip(),
                prefetch=tuple(prefetch),
                usage_requirements=usage.strip()
                if isinstance(usage, str) and usage.strip()
                else None,
            )
        )
    return tuple(specs)


Handler = Callable[..., Any]
