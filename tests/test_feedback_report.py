"""feedback-report names cards by kind and suggestions by label, with rates and reasons."""

from __future__ import annotations

import re

import pytest

from cds_service import cli
from cds_service.domain.card import make_uuid, tag_prefix
from cds_service.edge.content import load_content
from cds_service.feedback_report import CARD_KINDS, names_from
from tests.conftest import ROOT, with_settings
from tests.report_support import FOOTDROP, issue_cards, post_feedback
from tests.test_feedback import postgres_url  # noqa: F401 - the shared PostgreSQL fixture


def test_every_tag_the_content_can_issue_has_a_distinct_prefix():
    """Card kinds and suggestion labels never share a uuid prefix (the report could not tell)."""
    content = load_content(ROOT / "cards")
    names = names_from(content)
    tags = [f"card:{k}" for k in CARD_KINDS] + [f"suggestion:{o}" for o in content.orders]
    assert len({tag_prefix(t) for t in tags}) == len(tags)
    assert len(names.suggestions) >= len(content.orders)


def test_tagged_uuids_stay_unique_per_hook_call_and_key():
    """The tag replaces 4 bytes; the rest still depends on the hook instance and the key."""
    one = make_uuid("hook-1", "card", "card:foot-drop")
    two = make_uuid("hook-2", "card", "card:foot-drop")
    assert one != two and one[:8] == two[:8] == tag_prefix("card:foot-drop").hex()
    assert make_uuid("hook-1", "card", "card:foot-drop") == one


def _report(settings, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("CDS_DATABASE_URL", settings.database_url)
    page = tmp_path / "report.html"
    assert cli.main(["feedback-report", "--html", str(page)]) == 0
    return capsys.readouterr().out, page.read_text("utf-8")


def _check(out: str, html: str) -> None:
    assert "4 card(s) with feedback" in out
    assert f"{FOOTDROP} · Foot drop after IM injection" in out
    assert "cards 2  accepted 1 (50 %)  overridden 1 (50 %)" in out
    assert (
        "suggestion accepted: Ankle-foot orthosis now (prefabricated AFO, HCPCS L1930) × 1" in out
    )
    assert "override reason: (no reason given) × 1" in out
    assert "IM injection site (prevention)" in out
    assert "override reason: Patient preference × 1" in out
    assert re.search(r"suggestion accepted: Inject into .+ × 1", out)
    assert re.search(r"2026-03-02 +50 %  \(1 of 2\)", out)
    assert re.search(r"2026-03-09 +50 %  \(1 of 2\)", out)
    assert "never stored" not in out + html
    assert "<svg" in html and "<script" not in html.lower()
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    assert "Patient preference" in html and "Foot drop after IM injection" in html


def test_report_on_sqlite_names_kinds_labels_rates_and_reasons(
    app, client, clock, settings, monkeypatch, capsys, tmp_path
):
    """Real cards, real feedback, a real SQLite file: the report reads back what they were."""
    footdrop, prevention = issue_cards(client, clock)
    post_feedback(client, footdrop, prevention)
    out, html = _report(settings, monkeypatch, capsys, tmp_path)
    _check(out, html)


@pytest.mark.postgres
def test_report_on_postgres(
    postgres_url,  # noqa: F811
    settings,
    clock,
    monkeypatch,
    capsys,
    tmp_path,
):
    """The same report from PostgreSQL."""
    from cds_service import create_app
    from tests.conftest import dispose

    pg = with_settings(settings, database_url=postgres_url)
    app = create_app(pg, clock=clock)
    try:
        footdrop, prevention = issue_cards(app.test_client(), clock)
        post_feedback(app.test_client(), footdrop, prevention)
    finally:
        dispose(app)
    out, html = _report(pg, monkeypatch, capsys, tmp_path)
    _check(out, html)


def test_report_on_untagged_legacy_cards_says_unrecognised(
    client, settings, monkeypatch, capsys, tmp_path
):
    """Feedback on cards issued before tagged uuids is still counted, named as unrecognised."""
    item = {
        "card": "6f1c2a8e-0000-5000-8000-000000000000",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "6f1c2a8e-0000-5000-8000-000000000001"}],
        "outcomeTimestamp": "2026-03-03T10:00:00Z",
    }
    assert (
        client.post(f"/cds-services/{FOOTDROP}/feedback", json={"feedback": [item]}).status_code
        == 200
    )
    out, _ = _report(settings, monkeypatch, capsys, tmp_path)
    assert "unrecognised" in out and "cards 1  accepted 1 (100 %)" in out


def test_report_html_to_an_unwritable_path_is_one_line(settings, monkeypatch, capsys, tmp_path):
    """An --html path that cannot be written is an operator error, not a traceback."""
    monkeypatch.setenv("CDS_DATABASE_URL", settings.database_url)
    assert cli.main(["feedback-report", "--html", str(tmp_path / "no" / "dir" / "r.html")]) == 2
    assert capsys.readouterr().err.startswith("cds-service: feedback-report: cannot write")
