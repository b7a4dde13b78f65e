"""JSON Schemas shipped with the package: one source for validation and for ``/openapi.json``."""

from __future__ import annotations

import copy
import json
import re
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


# --- the hook request, fast -------------------------------------------------------------------
#
# jsonschema walks every prefetched resource (about 40 µs each), which made validation cost ten
# times json.loads for a large patient. The envelope is validated with jsonschema without the
# prefetch; the prefetch is checked by ``_prefetch_conforms``, which accepts only what the full
# schema accepts (it may be stricter, never looser). Anything it does not accept is validated
# again with the full schema, which alone produces the error messages.

_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_PREFETCH_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_BUNDLE_NESTING = 16


@cache
def _envelope_validator() -> Draft202012Validator:
    envelope = copy.deepcopy(schema("hook-request"))
    envelope["properties"]["prefetch"] = {"type": "object"}
    if _context_schemas():  # each hook's context is checked on its own, not by three if/then
        del envelope["allOf"]
    return Draft202012Validator(envelope)


@cache
def _context_schemas() -> dict[str, Draft202012Validator]:
    """hook -> a validator of its context, when the schema's ``allOf`` is only such if/then.

    ``allOf: [{if: {hook: const H}, then: {context: S}}]`` walked three if-branches and their
    ``$ref`` on every call (half the fast path's time); with ``hook`` and ``context`` required by
    the envelope it says exactly "the context of hook H conforms to S". Anything else in
    ``allOf`` leaves it to the envelope (an empty answer here).
    """
    full = schema("hook-request")
    validators: dict[str, Draft202012Validator] = {}
    for branch in full.get("allOf", []):
        try:
            condition, then = branch["if"], branch["then"]
            hook = condition["properties"]["hook"]["const"]
            context = then["properties"]["context"]
        except (KeyError, TypeError):
            return {}
        if (
            set(branch) != {"if", "then"}
            or condition != {"properties": {"hook": {"const": hook}}, "required": ["hook"]}
            or set(then) != {"properties"}
            or set(then["properties"]) != {"context"}
            or not isinstance(hook, str)
            or hook in validators
        ):
            return {}
        validators[hook] = Draft202012Validator(
            {"$id": full["$id"], "$defs": full["$defs"], **context}
        )
    return validators


def hook_request_problems(document: Any) -> list[str]:
    """Violations of the hook-request schema, as ``problems("hook-request", ...)`` reports them."""
    if (
        _envelope_validator().is_valid(document)
        and _context_conforms(document)
        and _prefetch_conforms(document.get("prefetch", {}))
    ):
        return []
    return problems("hook-request", document)


def _context_conforms(document: dict[str, Any]) -> bool:
    context = _context_schemas().get(document["hook"])
    return context is None or context.is_valid(document["context"])


def _prefetch_conforms(prefetch: Any) -> bool:
    if not isinstance(prefetch, dict):
        return False
    for key, value in prefetch.items():
        if not _PREFETCH_KEY.fullmatch(key):
            return False
        if value is not None and not _resource_conforms(value, 0):
            return False
    return True


def _resource_conforms(value: Any, depth: int) -> bool:
    if not isinstance(value, dict):
        return False
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
        return False
    if resource_type != "Bundle":
        return True
    if depth >= _MAX_BUNDLE_NESTING:
        return False
    if "type" in value and not isinstance(value["type"], str):
        return False
    links = value.get("link", [])
    if not isinstance(links, list) or not all(isinstance(link, dict) for link in links):
        return False
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        return False
    for entry in entries:
        if not isinstance(entry, dict):
            return False
        if "resource" in entry and not _resource_conforms(entry["resource"], depth + 1):
            return False
    return True
