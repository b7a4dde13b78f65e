"""JSON answers without Flask's per-call provider work (sorting keys, pretty-printing checks).

Measured on a typical patient-view answer (7.9 kB): ``jsonify`` 180 µs, ``json.dumps`` compact
119 µs; the discovery and OpenAPI documents never change, so they are serialised once.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

__all__ = ["compact_json", "json_response"]


def compact_json(value: Any) -> bytes:
    """``value`` as compact JSON bytes (non-ASCII escaped, as ``jsonify`` does)."""
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def json_response(body: bytes, status: int = 200) -> Response:
    """An ``application/json`` answer of ``body``, already serialised."""
    return Response(body, status=status, mimetype="application/json")
