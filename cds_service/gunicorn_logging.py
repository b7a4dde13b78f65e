"""gunicorn's ``logger_class``: its error and access logs as the app's JSON lines (same allow-list).

Only imported by gunicorn (through ``cds_service.gunicorn_conf``). The access line carries the
method, the path without its query string, the status and the duration: never headers or bodies.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from gunicorn.glogging import Logger

from cds_service.logs import JsonFormatter


class JsonLogger(Logger):
    """gunicorn.glogging.Logger with the JSON formatter on every handler it sets up."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """One structured line per response (only when an access log is configured)."""
        enabled = getattr(self, "access_log_enabled", None)  # gunicorn >= 24 computes it
        if not (self.cfg.accesslog if enabled is None else enabled):
            return
        status = getattr(resp, "status_code", None)
        if status is None:
            status = int(str(getattr(resp, "status", "0")).split(" ", 1)[0] or 0)
        self.access_log.info(
            "access",
            extra={
                "event": "access",
                "method": environ.get("REQUEST_METHOD"),
                "path": str(environ.get("PATH_INFO", ""))[:200],
                "status": status,
                "duration_ms": round(request_time.total_seconds() * 1000, 2),
            },
        )


def answered_by_worker(log_text: str, path: str) -> Counter[int]:
    """Responses to ``path`` per worker pid, read from the JSON access log this logger writes.

    Used to measure how evenly the workers share the load (``make bench`` and the balance test);
    a partial last line (still being written) is skipped.
    """
    counts: Counter[int] = Counter()
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "access" and entry.get("path") == path:
            counts[int(entry["pid"])] += 1
    return counts
