"""The baseline: a bare Flask app that reads the request and answers a JSON body of a given size.

Served by the same gunicorn config as the service, it prices what any Flask app on this machine
pays (HTTP, gunicorn, WSGI, reading the body, writing the answer). The size of the answer is asked
for per request in ``X-Bench-Response-Bytes``, so each scenario's baseline answers as many bytes
as the service does.
"""

from __future__ import annotations

import json
from functools import cache

from flask import Flask, Response, request

SIZE_HEADER = "X-Bench-Response-Bytes"


@cache
def _body(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least the bytes of its frame)."""
    frame = json.dumps({"cards": [], "padding": ""}, separators=(",", ":"))
    return json.dumps(
        {"cards": [], "padding": "x" * max(0, size - len(frame))}, separators=(",", ":")
    ).encode()


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
    @app.route("/<path:path>", methods=["GET", "POST"])
    def answer(path: str) -> Response:
        request.get_data(cache=False)
        size = min(int(request.headers.get(SIZE_HEADER, "64")), 16 * 1024 * 1024)
        return Response(_body(size), mimetype="application/json")

    return app
