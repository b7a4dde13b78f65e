"""Every failure becomes a JSON body ``{"error": ..., "details": [...]}`` with the right status.

Exceptions turn into HTTP statuses here and nowhere else; a traceback never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("cds_service.web")


class ApiError(Exception):
    """A client-visible failure: status, one-line error, and optional details."""

    def __init__(self, status: int, error: str, details: list[str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details or []
        self.headers: dict[str, str] = {}


def error_response(status: int, error: str, details: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"error": error}
    if details:
        body["details"] = details
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Map ApiError, Werkzeug HTTP errors and anything unexpected to JSON answers."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        response = error_response(error.status, error.error, error.details)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        messages = {
            404: "not found",
            405: "method not allowed",
            413: "request body too large",
            415: "unsupported media type",
        }
        response = error_response(status, messages.get(status, error.name.lower()))
        allowed = getattr(error, "valid_methods", None)
        if status == 405 and allowed:
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        # Class and location only: exception messages can carry patient data.
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
        log.error("unhandled error", extra={"error_class": type(error).__name__, "where": where})
        return error_response(500, "internal error")
