"""Read a JSON request body ourselves: Flask's ``get_json`` turns deep nesting into a 500."""

from __future__ import annotations

import json
from typing import Any

from flask import Request

from cds_service.web.errors import ApiError

JSON_MEDIA_TYPES = ("application/json", "application/fhir+json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_body(request: Request) -> bytes:
    """The raw body, never more than the limit: 413 above it, 400 for broken chunked framing.

    With a Content-Length, Werkzeug refuses a declared size over MAX_CONTENT_LENGTH (413). A chunked
    body has no declared size: Werkzeug would silently cut it at the limit (so a too-large body
    became "malformed JSON"), and a server's chunk parser raises on bad framing (a 500). Here the
    stream is read up to one byte past the limit, so both get their own answer.
    """
    if request.content_length is not None:
        return request.get_data(cache=False)
    limit = request.max_content_length
    stream = request.environ.get("wsgi.input")
    if stream is None or not request.environ.get("wsgi.input_terminated"):
        return b""  # no length and a stream that never ends by itself: nothing safe to read
    try:
        raw = stream.read() if limit is None else stream.read(limit + 1)
    except Exception:  # the server's chunk parser: InvalidChunkSize, NoMoreData, ...
        raise ApiError(400, "malformed body", ["the chunked transfer encoding is broken"]) from None
    if limit is not None and len(raw) > limit:
        raise ApiError(413, "request body too large", [f"at most {limit} bytes"])
    return bytes(raw)


def read_json_object(request: Request) -> dict[str, Any]:
    """The body as a dict, or an ApiError: 415 wrong type, 413 too large, 400 not a JSON object."""
    if request.mimetype not in JSON_MEDIA_TYPES:
        raise ApiError(415, "unsupported media type", ["send Content-Type: application/json"])
    raw = _read_body(request)
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
