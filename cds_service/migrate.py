"""``cds-service init-db``: create the feedback and replay tables, then exit.

There are no migrations: the schema is created with ``CREATE TABLE IF NOT EXISTS`` semantics
(SQLAlchemy ``create_all``) by every instance at start-up, and a creation racing another
instance's is tolerated (the loser checks that the tables exist). Running this once before the
instances start — the compose file's ``migrate`` service, the Kubernetes ``Job`` — means they all
find the tables in place and none of them races at all.
"""

from __future__ import annotations

from cds_service.config import Settings


def init_schema(settings: Settings) -> list[str]:
    """Create every table the settings need; one line per store saying where (no password)."""
    from cds_service import _redacted, open_feedback_store, open_replay_guard

    open_feedback_store(settings.database_url).dispose()
    open_replay_guard(settings.replay_url).dispose()
    return [
        f"feedback store ready: {_redacted(settings.database_url)}",
        f"replay store ready: {_redacted(settings.replay_url)}",
    ]
