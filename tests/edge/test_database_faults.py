"""Database faults never stall hooks for seconds, and /healthz says what actually fails.

The attacks (issue 11, item 8): a held SQLite write lock on the feedback database made every hook
take 10.5 s and then 503 (each hook writes a replay-guard row into the same database); a large
feedback batch pushed hook latency to 3.8 s; /healthz stayed 200 throughout. Now the replay store
is its own SQLite file (or its own short-timeout pool on PostgreSQL) with a bounded wait, /healthz
probes it with a real claim, and a feedback request is bounded in size.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from cds_service import create_app
from cds_service.edge.database import REPLAY_WAIT_SECONDS
from tests.conftest import FOOTDROP, dispose, patient_view_request, with_settings

from .conftest import ISSUER, TokenMinter

PUBLIC = "https://cds.example.org"
HOOK_AUD = f"{PUBLIC}/cds-services/{FOOTDROP}"
FEEDBACK_AUD = f"{HOOK_AUD}/feedback"
# Far above scheduling noise, far below the 10 s a held lock used to cost.
BOUNDED = 4.0


@pytest.fixture
def secured(settings, clock, trusted_jwks):
    app = create_app(
        with_settings(
            settings, auth=True, jwt_issuers={ISSUER: trusted_jwks.url}, public_url=PUBLIC
        ),
        clock=clock,
    )
    yield app
    dispose(app)


def _file(url: str) -> Path:
    database = make_url(url).database
    assert database
    return Path(database)


@contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another process-like connection holds the SQLite write lock until the block ends."""
    holder = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _hook(app, key) -> tuple[int, float]:
    token = TokenMinter(audience=HOOK_AUD, now=int(time.time())).sign(key)
    started = time.monotonic()
    response = app.test_client().post(
        f"/cds-services/{FOOTDROP}",
        json=patient_view_request(),
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code, time.monotonic() - started


def test_replay_store_is_a_separate_file_beside_the_feedback_database(secured):
    """The default replay store is its own SQLite file next to the feedback database."""
    settings = secured.extensions["cds_runtime"].settings
    assert _file(settings.replay_url).parent == _file(settings.database_url).parent
    assert _file(settings.replay_url) != _file(settings.database_url)


def test_a_held_feedback_lock_does_not_slow_hooks(secured, ec_key):
    """With the feedback database write-locked, an authenticated hook still answers at once."""
    _hook(secured, ec_key)  # create the files and warm the pools
    database = _file(secured.extensions["cds_runtime"].settings.database_url)
    with write_lock_held(database):
        status, elapsed = _hook(secured, ec_key)
    assert status == 200
    assert elapsed < BOUNDED


def test_a_held_replay_lock_is_a_quick_503_and_healthz_names_it(secured, ec_key):
    """Replay store locked: hooks get 503 within the bounded wait; /healthz says replay down."""
    _hook(secured, ec_key)
    replay = _file(secured.extensions["cds_runtime"].settings.replay_url)
    client = secured.test_client()
    with write_lock_held(replay):
        status, elapsed = _hook(secured, ec_key)
        health = client.get("/healthz")
    assert status == 503
    assert REPLAY_WAIT_SECONDS * 0.5 <= elapsed < BOUNDED
    assert health.status_code == 503
    assert health.get_json()["replay"] == "down"
    assert health.get_json()["database"] == "ok"
    assert health.get_json()["status"] == "down"
    # the lock released, everything is back
    assert _hook(secured, ec_key)[0] == 200
    assert client.get("/healthz").get_json()["replay"] == "ok"


def test_a_lost_feedback_database_is_named_by_healthz(settings, clock, tmp_path):
    """If the feedback database is gone, /healthz is 503 with database down."""
    database = tmp_path / "gone" / "feedback.sqlite3"
    app = create_app(with_settings(settings, database_url=f"sqlite:///{database}"), clock=clock)
    try:
        app.extensions["cds_runtime"].store.dispose()
        for path in database.parent.iterdir():
            path.unlink()
        database.parent.rmdir()
        health = app.test_client().get("/healthz")
        assert health.status_code == 503
        assert health.get_json()["database"] == "down"
    finally:
        dispose(app)


def _item(index: int, suggestions: int = 0) -> dict:
    item = {
        "card": f"card-{index}",
        "outcome": "accepted",
        "outcomeTimestamp": "2025-06-13T10:00:00Z",
    }
    if suggestions:
        item["acceptedSuggestions"] = [{"id": f"s-{index}-{n}"} for n in range(suggestions)]
    return item


@pytest.mark.parametrize(
    ("items", "suggestions", "status"),
    [(100, 20, 200), (101, 1, 400), (1, 21, 400)],
)
def test_feedback_batches_are_bounded(client, items, suggestions, status):
    """A feedback request holds at most 100 items of at most 20 suggestions: one short write."""
    body = {"feedback": [_item(i, suggestions) for i in range(items)]}
    response = client.post(f"/cds-services/{FOOTDROP}/feedback", json=body)
    assert response.status_code == status
    if status == 200:
        assert response.get_json()["stored"] == items


def test_a_maximal_feedback_batch_does_not_stall_concurrent_hooks(secured, ec_key, rsa_key):
    """While maximal feedback batches are written, authenticated hooks stay fast."""
    import threading

    _hook(secured, ec_key)
    stop = threading.Event()
    errors: list[int] = []

    def flood() -> None:
        client = secured.test_client()
        n = 0
        while not stop.is_set():
            token = TokenMinter(audience=FEEDBACK_AUD, now=int(time.time())).sign(rsa_key)
            body = {"feedback": [_item(n * 1000 + i, 20) for i in range(100)]}
            n += 1
            response = client.post(
                f"/cds-services/{FOOTDROP}/feedback",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code != 200:
                errors.append(response.status_code)

    writer = threading.Thread(target=flood, daemon=True)
    writer.start()
    try:
        timings = [_hook(secured, ec_key) for _ in range(5)]
    finally:
        stop.set()
        writer.join(60)
    assert all(status == 200 for status, _ in timings)
    assert max(elapsed for _, elapsed in timings) < BOUNDED
    assert errors == []
