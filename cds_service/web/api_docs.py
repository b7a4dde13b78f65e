"""The OpenAPI document as a readable page's data: operations, parameters, bodies, responses.

Rendered server-side by a template (no CDN, no script), from the same document `/openapi.json`
serves, so the two cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


@dataclass(frozen=True)
class ResponseDoc:
    status: str
    description: str
    schema: str


@dataclass(frozen=True)
class OperationDoc:
    anchor: str
    method: str
    path: str
    summary: str
    description: str
    parameters: tuple[str, ...]
    request_schema: str
    responses: tuple[ResponseDoc, ...]


@dataclass(frozen=True)
class SchemaDoc:
    name: str
    text: str


def _schema_name(content: Any) -> str:
    """The schema a body refers to (``#/components/schemas/X`` → ``X``), or its type."""
    if not isinstance(content, dict):
        return ""
    for media in content.values():
        schema = media.get("schema") if isinstance(media, dict) else None
        if isinstance(schema, dict):
            ref = schema.get("$ref")
            if isinstance(ref, str):
                return ref.rsplit("/", 1)[-1]
            return str(schema.get("type", ""))
    return ""


def _parameter(parameter: Any) -> str:
    if not isinstance(parameter, dict):
        return ""
    schema = parameter.get("schema")
    allowed = schema.get("enum") if isinstance(schema, dict) else None
    values = f": one of {', '.join(map(str, allowed))}" if isinstance(allowed, list) else ""
    required = "required" if parameter.get("required") else "optional"
    return f"{parameter.get('name')} (in {parameter.get('in')}, {required}){values}"


def operations(document: dict[str, Any]) -> list[OperationDoc]:
    """Every operation in path order, with what its page section shows."""
    found = []
    for path, item in (document.get("paths") or {}).items():
        for method in METHODS:
            operation = item.get(method) if isinstance(item, dict) else None
            if not isinstance(operation, dict):
                continue
            body = operation.get("requestBody")
            found.append(
                OperationDoc(
                    anchor=str(operation.get("operationId") or f"{method}-{path}"),
                    method=method.upper(),
                    path=path,
                    summary=str(operation.get("summary", "")),
                    description=str(operation.get("description", "")),
                    parameters=tuple(_parameter(p) for p in operation.get("parameters", [])),
                    request_schema=_schema_name(body.get("content"))
                    if isinstance(body, dict)
                    else "",
                    responses=tuple(
                        ResponseDoc(
                            status=str(status),
                            description=str(response.get("description", "")),
                            schema=_schema_name(response.get("content")),
                        )
                        for status, response in sorted((operation.get("responses") or {}).items())
                        if isinstance(response, dict)
                    ),
                )
            )
    return found


def schemas(document: dict[str, Any]) -> list[SchemaDoc]:
    """Each component schema, as indented JSON (the exact contract the service validates)."""
    components = (document.get("components") or {}).get("schemas") or {}
    return [SchemaDoc(name, json.dumps(schema, indent=2)) for name, schema in components.items()]
