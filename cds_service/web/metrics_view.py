"""``GET /metrics``: Prometheus text format, off, open or behind a bearer token (CDS_METRICS).

Production defaults to off: an operator turns it on deliberately (``token``, or ``open`` when only
the monitoring network can reach the port). The token is compared in constant time, never logged.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from cds_service import metrics
from cds_service.web.errors import ApiError

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape() -> Response:
    settings = current_app.extensions["cds_runtime"].settings
    if settings.metrics == "off":
        raise ApiError(404, "not found", ["/metrics is off (CDS_METRICS)"])
    if settings.metrics == "token":
        sent = request.headers.get("Authorization", "")
        expected = f"Bearer {settings.metrics_token}"
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8")):
            failure = ApiError(401, "unauthorized", ["the metrics bearer token is required"])
            failure.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            raise failure
    body, content_type = metrics.exposition()
    return Response(body, status=200, content_type=content_type)
