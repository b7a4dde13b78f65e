"""Feedback: validated, idempotent, committed before 200, durable across restarts, PHI-free."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from cds_service import create_app
from cds_service.edge.database import StoreUnavailableError, make_engine
from cds_service.edge.feedback_store import FeedbackStore
from tests.conftest import FOOTDROP, dispose, with_settings

URL = f"/cds-services/{FOOTDROP}/feedback"


def accepted(card: str = "card-1", suggestion: str = "sugg-afo", at: str = "2025-06-13T10:05:00Z"):
    return {
        "card": card,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": at,
    }


def overridden(card: str = "card-2", comment: str | None = None):
    reason: dict = {"reason": {"code": "already-has-orthosis", "system": "http://example.org/x"}}
    if comment:
        reason["userComment"] = comment
    return {
        "card": card,
        "outcome": "overridden",
        "overrideReason": reason,
        "outcomeTimestamp": "2025-06-13T10:06:00.52Z",
    }


def test_feedback_batch_is_stored_and_counted(client, app):
    """A batch of feedback items is committed and the answer says how many were stored."""
    response = client.post(URL, json={"feedback": [accepted(), overridden()]})
    assert response.status_code == 200
    assert response.get_json() == {"stored": 2, "duplicates": 0}
    assert app.extensions["cds_runtime"].store.count() == 2


def test_duplicate_feedback_is_idempotent(client, app):
    """The same item sent again (in a batch or later) is acknowledged but stored once."""
    item = accepted()
    assert client.post(URL, json={"feedback": [item, item]}).get_json() == {
        "stored": 1,
        "duplicates": 1,
    }
    assert client.post(URL, json={"feedback": [item]}).get_json() == {"stored": 0, "duplicates": 1}
    assert app.extensions["cds_runtime"].store.count() == 1


def test_same_card_with_a_later_outcome_is_a_new_item(client, app):
    """A card accepted and later overridden keeps both events."""
    client.post(URL, json={"feedback": [accepted(card="c")]})
    later = overridden(card="c")
    assert client.post(URL, json={"feedback": [later]}).get_json()["stored"] == 1
    assert app.extensions["cds_runtime"].store.count() == 2


def test_sandbox_override_without_display_is_accepted(client):
    """The sandbox sends override reasons without display; that is valid feedback."""
    response = client.post(URL, json={"feedback": [overridden()]})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({"outcome": "accepted", "outcomeTimestamp": "2025-06-13T10:05:00Z"}, "'card'"),
        (
            {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2025-06-13T10:05:00Z"},
            "acceptedSuggestions",
        ),
        ({"card": "c", "outcome": "maybe", "outcomeTimestamp": "2025-06-13T10:05:00Z"}, "maybe"),
        ({"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}, "yesterday"),
        (
            {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2025-13-00T25:61:00Z"},
            "not a real date-time",
        ),
        (
            {
                "card": "c",
                "outcome": "overridden",
                "overrideReason": {"reason": {"code": "x"}},
                "outcomeTimestamp": "2025-06-13T10:05:00Z",
            },
            "system",
        ),
    ],
)
def test_invalid_feedback_is_400_naming_the_problem(client, app, item, fragment):
    """Malformed feedback is refused with 400, a detail naming the field, and nothing stored."""
    response = client.post(URL, json={"feedback": [accepted(), item]})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid feedback"
    assert any(fragment in detail for detail in body["details"])
    assert app.extensions["cds_runtime"].store.count() == 0


@pytest.mark.parametrize(
    "body", [{}, {"feedback": []}, {"feedback": {}}, {"feedback": [1]}, {"items": []}]
)
def test_feedback_envelope_must_hold_items(client, body):
    """The body must be {"feedback": [items]} with at least one item."""
    assert client.post(URL, json=body).status_code == 400


def test_feedback_for_unknown_service_is_404(client):
    """Feedback for a service discovery does not list is 404."""
    response = client.post("/cds-services/nope/feedback", json={"feedback": [accepted()]})
    assert response.status_code == 404


def test_feedback_survives_an_app_restart(settings, clock):
    """Acknowledged feedback is in the SQLite file and visible to a new app process."""
    first = create_app(settings, clock=clock)
    try:
        response = first.test_client().post(URL, json={"feedback": [accepted(), overridden()]})
    finally:
        dispose(first)
    assert response.status_code == 200
    second = create_app(settings, clock=clock)
    try:
        assert second.extensions["cds_runtime"].store.count() == 2
    finally:
        dispose(second)


def test_free_text_comment_is_not_stored(client, settings):
    """An override comment may name the patient: only its presence is kept, never its text."""
    client.post(URL, json={"feedback": [overridden(comment="Mrs Jane Doe refused the brace")]})
    path = settings.database_url.removeprefix("sqlite:///")
    raw = b"".join(p.read_bytes() for p in Path(path).parent.glob("feedback.sqlite3*"))
    assert b"Jane Doe" not in raw
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(text("SELECT override_has_comment FROM feedback")).one()
    finally:
        engine.dispose()
    assert row[0] in (1, True)


def test_sqlite_runs_in_wal_with_full_sync(settings, app):
    """The default store uses WAL and synchronous=FULL so acknowledged items survive a crash."""
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2
    finally:
        engine.dispose()


def test_store_down_gives_503_and_nothing_acknowledged(tmp_path, settings, clock):
    """When the database cannot be written, feedback answers 503 and health reports it."""
    database = tmp_path / "gone" / "feedback.sqlite3"
    app = create_app(with_settings(settings, database_url=f"sqlite:///{database}"), clock=clock)
    try:
        client = app.test_client()
        app.extensions["cds_runtime"].store.dispose()
        for path in database.parent.iterdir():
            path.unlink()
        database.parent.rmdir()
        response = client.post(URL, json={"feedback": [accepted()]})
        assert response.status_code == 503
        assert response.get_json()["error"] == "feedback store unavailable"
        assert client.get("/healthz").status_code == 503
    finally:
        dispose(app)


def test_report_counts_per_service_card_and_suggestion(tmp_path):
    """The report gives acceptance and override counts per service, card and suggestion."""
    store = FeedbackStore(make_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}"))
    try:
        store.create_schema()
        store.record("svc", [accepted(card="a", suggestion="s1"), overridden(card="c")])
        store.record("svc", [accepted(card="b", suggestion="s1", at="2025-06-13T11:00:00Z")])
        rows = {(r.service_id, r.card_uuid, r.suggestion_uuid): r for r in store.report()}
    finally:
        store.dispose()
    assert (rows["svc", None, None].accepted, rows["svc", None, None].overridden) == (2, 1)
    assert (rows["svc", "c", None].accepted, rows["svc", "c", None].overridden) == (0, 1)
    assert rows["svc", "a", "s1"].accepted == 1 and rows["svc", "b", "s1"].accepted == 1


@pytest.fixture
def store(tmp_path):
    """A fresh SQLite feedback store, disposed whatever the test does."""
    feedback = FeedbackStore(make_engine(f"sqlite:///{tmp_path / 'r.sqlite3'}"))
    feedback.create_schema()
    yield feedback
    feedback.dispose()


def test_a_card_counts_once_by_its_latest_outcome(store):
    """Override then accept (later): both are stored, the report counts the card as accepted."""
    first = {**overridden(card="a"), "outcomeTimestamp": "2025-06-13T10:00:00Z"}
    later = accepted(card="a", suggestion="s1", at="2025-06-13T10:30:00+02:00")  # 08:30Z: earlier
    latest = accepted(card="a", suggestion="s2", at="2025-06-13T10:45:00Z")
    assert store.record("svc", [first, later, latest]).stored == 3
    rows = {(r.service_id, r.card_uuid, r.suggestion_uuid): r for r in store.report()}
    assert (rows["svc", "a", None].accepted, rows["svc", "a", None].overridden) == (1, 0)
    assert ("svc", "a", "s2") in rows and ("svc", "a", "s1") not in rows
    assert store.count() == 3


@pytest.mark.parametrize(
    "spelling",
    ["2025-06-13T10:05:00+00:00", "2025-06-13T12:05:00+02:00", "2025-06-13t10:05:00.000000z"],
)
def test_the_same_instant_spelt_differently_is_one_item(store, spelling):
    """Z, +00:00, another offset and lower case for one instant do not defeat de-duplication."""
    assert store.record("svc", [accepted()]).stored == 1
    again = store.record("svc", [accepted(at=spelling)])
    assert (again.stored, again.duplicates) == (0, 1)


def test_feedback_over_real_http(live_server):
    """Feedback posted over loopback HTTP is acknowledged."""
    response = requests.post(f"{live_server.url}{URL}", json={"feedback": [accepted()]}, timeout=5)
    assert response.status_code == 200 and response.json()["stored"] == 1


@pytest.mark.integration  # the PostgreSQL driver (psycopg) is in the `integration` extra
def test_unreachable_store_raises_store_unavailable():
    """A store whose database cannot be reached raises StoreUnavailableError, not a driver error."""
    store = FeedbackStore(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    try:
        with pytest.raises(StoreUnavailableError):
            store.ping()
    finally:
        store.dispose()


POSTGRES_URL = os.environ.get("FOOTDROP_TEST_POSTGRES_URL")
REQUIRE_POSTGRES = os.environ.get("FOOTDROP_REQUIRE_POSTGRES") == "1"


@pytest.fixture
def postgres_url():
    if not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("FOOTDROP_REQUIRE_POSTGRES=1 but FOOTDROP_TEST_POSTGRES_URL is not set")
        pytest.skip("no PostgreSQL server: .ci/run starts one (scripts/start-postgres.sh)")
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS feedback_accepted_suggestion, feedback"))
    engine.dispose()
    return POSTGRES_URL


@pytest.mark.postgres
def test_postgres_store_is_idempotent_and_durable(postgres_url, settings, clock):
    """On a real PostgreSQL server, feedback is stored once and survives an app restart."""
    pg_settings = with_settings(settings, database_url=postgres_url)
    first = create_app(pg_settings, clock=clock)
    item = accepted()
    try:
        assert first.test_client().post(
            URL, json={"feedback": [item, item, overridden()]}
        ).get_json() == {"stored": 2, "duplicates": 1}
    finally:
        dispose(first)
    restarted = create_app(pg_settings, clock=clock)
    try:
        store = restarted.extensions["cds_runtime"].store
        assert store.count() == 2
        assert ("card-1", "sugg-afo") in {(r.card_uuid, r.suggestion_uuid) for r in store.report()}
        assert restarted.test_client().get("/healthz").status_code == 200
    finally:
        dispose(restarted)


def test_a_deeply_nested_extension_is_stored_not_a_500(store):
    """An override extension nested 5,000 levels deep is stored, not a 500.

    Fingerprinting the raw item used to serialise it (a RecursionError on Python 3.11/3.12); the
    store now keeps only the fields it needs, so the extension neither breaks the write nor changes
    the fingerprint.
    """
    deep: dict = {}
    cursor = deep
    for _ in range(5000):
        cursor["x"] = {}
        cursor = cursor["x"]
    item = overridden(card="deep")
    item["overrideReason"]["reason"]["extension"] = deep
    assert store.record("svc", [item]).stored == 1
    assert store.record("svc", [overridden(card="deep")]).duplicates == 1  # extension not kept
