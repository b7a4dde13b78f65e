"""JSON Schemas shipped with the package: one source for validation and for ``/openapi.json``."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_NAMES = ("hook-request", "hook-response", "feedback-request", "error")
MAX_REPORTED_ERRORS = 20


@cache
def schema(name: str) -> dict[str, Any]:
    """The parsed schema ``name`` (one of SCHEMA_NAMES)."""
    text = resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def validator(name: str) -> Draft202012Validator:
    """A compiled validator, built once per process (schema compilation is the slow part)."""
    checked = schema(name)
    Draft202012Validator.check_schema(checked)
    return Draft202012Validator(checked)


def problems(name: str, document: Any) -> list[str]:
    """Human-readable violations of schema ``name``, most specific first, empty when valid."""
    errors = sorted(validator(name).iter_errors(document), key=_error_order)
    return [_describe(error) for error in errors[:MAX_REPORTED_ERRORS]]


def _error_order(error: Any) -> tuple[int, str]:
    return (-len(error.absolute_path), error.json_path)


def _describe(error: Any) -> str:
    message = error.message
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if error.validator in ("oneOf", "anyOf") and description:
        message = f"must be {description}"
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{error.json_path}: {message}"
