"""Read a JSON request body ourselves: Flask's ``get_json`` turns deep nesting into a 500."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from cds_service.web.errors import ApiError

JSON_MEDIA_TYPES = ("application/json", "application/fhir+json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a dict, or an ApiError: 415 wrong type, 413 too large, 400 not a JSON object."""
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise ApiError(415, "unsupported media type", ["send Content-Type: application/json"])
    raw = request.get_data(cache=False)  # MAX_CONTENT_LENGTH makes Werkzeug answer 413
    if not raw:
        raise ApiError(400, "empty body", ["the request body must be a JSON object"])
    try:
        document = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ApiError(400, "malformed JSON", ["JSON is nested too deeply"]) from None
    except UnicodeDecodeError:
        raise ApiError(400, "malformed JSON", ["the body is not UTF-8"]) from None
    except json.JSONDecodeError as error:
        detail = f"{error.msg} at line {error.lineno} column {error.colno}"
        raise ApiError(400, "malformed JSON", [detail]) from None
    except ValueError as error:
        raise ApiError(400, "malformed JSON", [str(error)]) from None
    if not isinstance(document, dict):
        raise ApiError(400, "invalid request", ["the body must be a JSON object"])
    return document
