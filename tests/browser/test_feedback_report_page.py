"""The feedback report's HTML page in Chromium: self-contained, readable, accessible."""

from __future__ import annotations

from cds_service import cli
from tests.browser.conftest import axe_violations, screenshot
from tests.report_support import issue_cards, post_feedback


def test_feedback_report_page_renders_offline_with_chart_and_no_serious_axe_issues(
    client, clock, settings, monkeypatch, capsys, tmp_path, browser_page
):
    """Opened from file:// with every network request refused, the page shows its chart and
    tables, loads nothing, and axe finds no serious or critical violation."""
    footdrop, prevention = issue_cards(client, clock)
    post_feedback(client, footdrop, prevention)
    monkeypatch.setenv("CDS_DATABASE_URL", settings.database_url)
    page_path = tmp_path / "feedback.html"
    assert cli.main(["feedback-report", "--html", str(page_path)]) == 0
    capsys.readouterr()

    requested: list[str] = []
    browser_page.on("request", lambda r: requested.append(r.url))
    browser_page.goto(page_path.as_uri())
    assert browser_page.title() == "footdrop-cds feedback report"
    chart = browser_page.locator("svg[role=img]")
    assert chart.count() == 1
    assert chart.locator("rect").count() == 2  # two weeks of feedback
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert browser_page.get_by_role("cell", name="Patient preference").count() == 1
    assert browser_page.get_by_role("heading", name="Cards").count() == 1
    assert requested == [page_path.as_uri()]  # nothing but the file itself
    screenshot(browser_page, "feedback-report")
    assert axe_violations(browser_page) == []
