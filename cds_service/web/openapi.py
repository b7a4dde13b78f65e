"""The OpenAPI 3.1 document of the HTTP API, built from the very schemas used for validation."""

from __future__ import annotations

import copy
from typing import Any

from cds_service import schemas

_COMPONENT_NAMES = {
    "hook-request": "HookRequest",
    "hook-response": "HookResponse",
    "feedback-request": "FeedbackRequest",
    "error": "Error",
}


def build_openapi(version: str, service_ids: list[str]) -> dict[str, Any]:
    """A self-contained OpenAPI 3.1 document; each schema's ``$defs`` become components."""
    components: dict[str, Any] = {}
    for name, component in _COMPONENT_NAMES.items():
        document = copy.deepcopy(schemas.schema(name))
        definitions = document.pop("$defs", {})
        for key in ("$schema", "$id"):
            document.pop(key, None)
        for def_name, definition in definitions.items():
            components[f"{component}_{def_name}"] = _rewrite_refs(definition, component)
        components[component] = _rewrite_refs(document, component)
    components["Discovery"] = _discovery_schema()
    components["FeedbackResult"] = {
        "type": "object",
        "required": ["stored", "duplicates"],
        "properties": {
            "stored": {"type": "integer", "minimum": 0},
            "duplicates": {"type": "integer", "minimum": 0},
        },
    }
    components["Health"] = {
        "type": "object",
        "required": ["status", "version", "database", "replay"],
        "properties": {
            "status": {"enum": ["ok", "down"]},
            "version": {"type": "string"},
            "database": {"enum": ["ok", "down"], "description": "feedback database"},
            "replay": {
                "enum": ["ok", "down", "off"],
                "description": "JWT replay store every hook writes to (off: auth off)",
            },
        },
    }

    def error(description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }

    def body(component: str) -> dict[str, Any]:
        return {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}
            },
        }

    def ok(component: str, description: str) -> dict[str, Any]:
        return {
            "description": description,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}
            },
        }

    service_id = {
        "name": "service_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": service_ids} if service_ids else {"type": "string"},
    }
    common_errors = {
        "400": error("Malformed JSON, schema violation, wrong or unknown hook"),
        "401": error("Missing or invalid JWT (when authentication is on)"),
        "404": error("Unknown service id"),
        "413": error("Body larger than CDS_MAX_BODY_BYTES"),
        "415": error("Content-Type is not application/json"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "footdrop-cds",
            "version": version,
            "description": (
                "CDS Hooks 2.0 services: foot drop after an intramuscular injection "
                "(patient-view), and a safer IM injection site at ordering "
                "(order-select, order-sign)."
            ),
        },
        "paths": {
            "/cds-services": {
                "get": {
                    "summary": "Discovery",
                    "operationId": "discovery",
                    "responses": {"200": ok("Discovery", "The services offered")},
                }
            },
            "/cds-services/{service_id}": {
                "post": {
                    "summary": "Call a CDS service",
                    "operationId": "callService",
                    "parameters": [service_id],
                    "requestBody": body("HookRequest"),
                    "responses": {
                        "200": ok("HookResponse", "Cards (possibly none)"),
                        **common_errors,
                        "412": error("Required FHIR data could not be obtained"),
                    },
                }
            },
            "/cds-services/{service_id}/feedback": {
                "post": {
                    "summary": "Feedback on cards",
                    "operationId": "feedback",
                    "parameters": [service_id],
                    "requestBody": body("FeedbackRequest"),
                    "responses": {
                        "200": ok("FeedbackResult", "All items committed"),
                        **common_errors,
                        "503": error("Feedback store unavailable; nothing stored"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1 document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and database reachability",
                    "operationId": "health",
                    "responses": {
                        "200": ok("Health", "Up: the database answers, the replay store writes"),
                        "503": ok("Health", "A part is down: the body names it"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (CDS_METRICS: off, open or token)",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format, summed over all workers",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": error("CDS_METRICS=token and no valid bearer token"),
                        "404": error("CDS_METRICS=off"),
                    },
                }
            },
        },
        "components": {"schemas": components},
    }


def _rewrite_refs(node: Any, component: str) -> Any:
    if isinstance(node, dict):
        rewritten = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                rewritten[key] = f"#/components/schemas/{component}_{value[len('#/$defs/') :]}"
            else:
                rewritten[key] = _rewrite_refs(value, component)
        return rewritten
    if isinstance(node, list):
        return [_rewrite_refs(item, component) for item in node]
    return node


def _discovery_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["services"],
        "properties": {
            "services": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["hook", "description", "id"],
                    "properties": {
                        "hook": {"type": "string"},
                        "title": {"type": "string"},
                        "description": {"type": "string"},
                        "id": {"type": "string"},
                        "prefetch": {"type": "object", "additionalProperties": {"type": "string"}},
                        "usageRequirements": {"type": "string"},
                    },
                },
            }
        },
    }
