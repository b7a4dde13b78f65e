"""The development page over HTTP: security headers, the preview through the real endpoint,
sanitised card Markdown, and the API docs page drawn from /openapi.json."""

from __future__ import annotations

import pytest

from cds_service.web.api_docs import operations
from cds_service.web.card_view import card_view, render_markdown, response_cards
from cds_service.web.devpage import CSP


def test_index_lists_every_demo_and_links_the_api(client):
    """``/`` links discovery, the OpenAPI document, the docs page and every demo patient."""
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for target in ('href="/cds-services"', 'href="/openapi.json"', 'href="/docs"'):
        assert target in page
    assert page.count('href="/?demo=') == 6
    assert "<script" not in page
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src" not in CSP and "default-src 'none'" in CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_preview_runs_the_hook_through_the_endpoint_and_logs_it(client, caplog):
    """Choosing a demo calls the real hook endpoint (its request log line says so)."""
    with caplog.at_level("INFO", logger="cds_service.web"):
        response = client.get("/?demo=foot-drop-after-gluteal-injection")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'class="card card-warning"' in page
    assert "→ <strong>200</strong>" in page
    handled = [r for r in caplog.records if getattr(r, "event", None) == "request"]
    assert [getattr(r, "service_id", None) for r in handled] == ["footdrop-im-injection"]


def test_unknown_demo_is_a_404_page(client):
    """An unknown demo name is a 404 that names it (escaped), not a 500."""
    response = client.get("/?demo=<b>nobody</b>")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "&lt;b&gt;nobody&lt;/b&gt;" in page and "<b>nobody" not in page


def test_with_auth_on_the_preview_shows_the_401_and_says_why(settings, clock):
    """With CDS_AUTH=on the preview cannot sign a token: the page shows the 401 and explains."""
    from cds_service import create_app
    from tests.conftest import dispose, with_settings

    app = create_app(
        with_settings(
            settings,
            auth=True,
            jwt_issuers={"https://ehr.example.org": "https://ehr.example.org/jwks"},
        ),
        clock=clock,
    )
    try:
        page = app.test_client().get("/?demo=red-flag-bilateral-foot-drop").get_data(as_text=True)
    finally:
        dispose(app)
    assert "CDS_AUTH=on" in page and "→ <strong>401</strong>" in page
    assert "The service answered 401" in page


def test_docs_page_lists_every_operation_of_the_openapi_document(client):
    """/docs shows each path and method of /openapi.json and each schema."""
    document = client.get("/openapi.json").get_json()
    page = client.get("/docs").get_data(as_text=True)
    ops = operations(document)
    assert len(ops) == sum(len(item) for item in document["paths"].values())
    for op in ops:
        assert f"<code>{op.path}</code>" in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


@pytest.mark.parametrize(
    ("markdown", "absent", "present"),
    [
        ("<script>alert(1)</script>**bold**", "<script", "<strong>bold</strong>"),
        ("[x](javascript:alert(1))", 'href="javascript:', "[x](javascript:alert(1))"),
        ('<img src=x onerror="alert(1)">text', "<img", "&lt;img src=x onerror="),
        ("[doi](https://doi.org/10.1/x)", "<script", 'href="https://doi.org/10.1/x"'),
    ],
)
def test_card_markdown_is_rendered_and_sanitised(markdown, absent, present):
    """Card detail Markdown becomes HTML; raw HTML is shown as text and javascript: is no link."""
    html = str(render_markdown(markdown))
    assert absent not in html
    assert present in html


def test_cards_are_read_defensively():
    """Odd card fields never break the page: unknown indicator is info, bad links are text."""
    view = card_view(
        {
            "summary": "s",
            "indicator": "purple",
            "source": "not an object",
            "suggestions": [{"label": "go", "actions": "nope"}, 3],
            "links": [{"label": "app", "url": "javascript:alert(1)", "type": "smart"}],
            "overrideReasons": [{"code": "c"}, "x"],
        }
    )
    assert view.indicator == "info" and view.source_label == ""
    assert [s.label for s in view.suggestions] == ["go"] and view.suggestions[0].actions == ()
    assert view.links[0].url is None and view.links[0].type == "smart"
    assert view.override_reasons == ("c",)
    assert response_cards({"cards": "no"}) == [] and response_cards(None) == []
