"""JSON log lines with operational fields only: never names, identifiers, tokens or bodies."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Only these ``extra`` fields are ever written; anything else passed by mistake is dropped.
ALLOWED_FIELDS = (
    "event",
    "hook_instance",
    "service_id",
    "hook",
    "method",
    "path",
    "status",
    "duration_ms",
    "cards",
    "resources",
    "skipped",
    "fetched_keys",
    "fetch_failures",
    "items",
    "stored",
    "duplicates",
    "reason",
    "key",
    "error_class",
    "where",
    "elapsed_ms",
    "count",
    "issuer",
    "settings",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, restricted to ALLOWED_FIELDS."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        return json.dumps(line, separators=(",", ":"), default=str)


def configure_logging(level: str) -> None:
    """Send the ``cds_service`` loggers to stderr as JSON, once per process."""
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    if not any(getattr(h, "_cds_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler._cds_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
