"""Prefetch templates (CDS Hooks 2.0 "Prefetch Template"): checking and filling, no I/O.

A template is a FHIR query relative to the client's ``fhirServer``, e.g.
``Condition?patient={{context.patientId}}``. A token "MUST contain only the qualified path to a hook
context field or one of the following user identifiers: userPractitionerId, userPractitionerRoleId,
userPatientId, or userRelatedPersonId", and only root-level primitive context fields are eligible.

Filled values are percent-encoded for where they stand: in the path a value is one segment (or a
``Type/id`` reference, the only form allowed to keep its ``/``); in the query it is one literal
search value, so FHIR's own search separators (``\\ , $ |``) are escaped with a backslash first.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

__all__ = [
    "USER_TOKENS",
    "TemplateError",
    "add_lookback",
    "fill_template",
    "validate_template",
]

USER_TOKENS: Mapping[str, str] = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}

_TOKEN = re.compile(r"\{\{(.*?)\}\}")
_CONTEXT_FIELD = re.compile(r"context\.([A-Za-z_][A-Za-z0-9_]*)")
_USER_REFERENCE = re.compile(
    r"(?:https?://\S+/)?(Practitioner|PractitionerRole|Patient|RelatedPerson)/([A-Za-z0-9\-.]{1,64})"
)
_RELATIVE_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
_SEARCH_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "$": "\\$", "|": "\\|"})

# Date search parameter per resource type for the look-back (clinical.md §2.3). Types left out are
# not narrowed by date: a Condition recorded long ago may still be active, and an order or an
# appointment matters by its status, not by when it was written.
LOOKBACK_PARAMS: Mapping[str, str] = {
    "Procedure": "date",
    "MedicationAdministration": "effective-time",
    "Immunization": "date",
    "Observation": "date",
    "Encounter": "date",
}


class TemplateError(ValueError):
    """A template is invalid, or a token cannot be filled from the given context."""

    def __init__(self, message: str, token: str | None = None) -> None:
        super().__init__(message)
        self.token = token


def validate_template(template: str, allowed_context_fields: Collection[str]) -> None:
    """Raise TemplateError unless every token is a spec-valid token for a hook with these fields.

    ``allowed_context_fields`` are the hook's context fields marked "Prefetch Token: Yes"
    (e.g. ``{"userId", "patientId", "encounterId"}`` for patient-view); the user tokens are
    allowed only when ``userId`` is among them.
    """
    if not template or template.startswith("/") or "://" in template.split("?", 1)[0]:
        raise TemplateError(f"template must be a relative FHIR query: {template!r}")
    _check_delimiters(template)
    for name in (m.group(1).strip() for m in _TOKEN.finditer(template)):
        field = _context_field(name)
        if field is not None:
            if field not in allowed_context_fields:
                raise TemplateError(f"{{{{{name}}}}} is not a prefetch token of this hook", name)
        elif name in USER_TOKENS:
            if "userId" not in allowed_context_fields:
                raise TemplateError(f"{{{{{name}}}}} needs a hook with context.userId", name)
        else:
            raise TemplateError(f"{{{{{name}}}}} is not a valid prefetch token", name)


def fill_template(template: str, context: Mapping[str, Any]) -> str:
    """Return ``template`` with each token replaced by its URL-encoded value from ``context``."""
    _check_delimiters(template)
    query_start = template.find("?")
    parts: list[str] = []
    last = 0
    for match in _TOKEN.finditer(template):
        in_path = query_start < 0 or match.start() < query_start
        value = _token_value(match.group(1).strip(), context)
        parts += [template[last : match.start()], _encode(value, in_path)]
        last = match.end()
    parts.append(template[last:])
    return "".join(parts)


def add_lookback(query: str, since: date) -> str:
    """Return a filled search ``query`` narrowed to ``since`` onwards where the type has a date.

    For use when the service queries the FHIR server itself: prefetch tokens cannot express a
    date, so the templates carry none (clinical.md §2.3). Reads, types without a look-back
    parameter and queries that already filter on it are returned unchanged.
    """
    path, sep, params = query.partition("?")
    param = LOOKBACK_PARAMS.get(path)
    if param is None or any(p.split("=", 1)[0] == param for p in params.split("&")):
        return query
    condition = f"{param}=ge{since.isoformat()}"
    return f"{path}?{params}&{condition}" if sep and params else f"{path}?{condition}"


def _check_delimiters(template: str) -> None:
    rest = _TOKEN.sub("", template)
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"unbalanced token delimiters in {template!r}")


def _context_field(name: str) -> str | None:
    match = _CONTEXT_FIELD.fullmatch(name)
    return match.group(1) if match else None


def _token_value(name: str, context: Mapping[str, Any]) -> str:
    field = _context_field(name)
    if field is not None:
        return _primitive(context, field, name)
    if name in USER_TOKENS:
        match = _USER_REFERENCE.fullmatch(_primitive(context, "userId", name))
        if match is None or match.group(1) != USER_TOKENS[name]:
            wanted = USER_TOKENS[name]
            raise TemplateError(f"context.userId is not a {wanted} for {{{{{name}}}}}", name)
        return match.group(2)
    raise TemplateError(f"{{{{{name}}}}} is not a valid prefetch token", name)


def _primitive(context: Mapping[str, Any], field: str, token: str) -> str:
    value = context.get(field)
    if value is None or value == "":  # an empty id would widen the search to every patient
        raise TemplateError(f"context.{field} is missing for {{{{{token}}}}}", token)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(f"context.{field} is not a primitive value for {{{{{token}}}}}", token)


def _encode(value: str, in_path: bool) -> str:
    if not in_path:
        return quote(value.translate(_SEARCH_ESCAPES), safe="")
    if value in (".", ".."):
        raise TemplateError(f"{value!r} cannot stand as a path segment")
    return value if _RELATIVE_REFERENCE.fullmatch(value) else quote(value, safe="")
