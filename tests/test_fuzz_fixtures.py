"""Every field of every fixture mutated to another JSON type: never a 500, never a crash.

Issue 11, item 9: one malformed resource (``Procedure.bodySite[].coding`` as a number) raised a
TypeError and suppressed every card, red flags included. A malformed resource must be skipped and
counted; anything the schema refuses is a 400.

In ``make test`` a third of the field paths of each fixture (a different third from fixture to
fixture) each get one replacement type, rotating over the types, which keeps the cost near 20 s of
CPU; ``FOOTDROP_FUZZ=full`` (``make fuzz``) tries every field of every fixture with every type.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app, schemas
from tests.conftest import FIXTURES, FrozenClock, dispose, with_settings

FULL = os.environ.get("FOOTDROP_FUZZ") == "full"
REPLACEMENTS: tuple[Any, ...] = (None, True, 7, -1.5, "x", [], {}, [{"a": 1}], {"coding": 3})
FIXTURE_FILES = sorted(FIXTURES.glob("*/*.json"))
SERVICE_FOR_HOOK = {
    "patient-view": "footdrop-im-injection",
    "order-select": "im-injection-site-select",
    "order-sign": "im-injection-site-sign",
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*prefix, index)
            yield from _paths(value, (*prefix, index))


def _roots(request: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Where the FHIR data sits: every prefetch value, and the draft orders of order hooks."""
    for key in request.get("prefetch") or {}:
        yield ("prefetch", key)
    if isinstance(request.get("context", {}).get("draftOrders"), dict):
        yield ("context", "draftOrders")


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _mutations(request: dict[str, Any], salt: int) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for root in _roots(request):
        value = _get(request, root)
        if value is None:
            continue
        for number, path in enumerate(_paths(value)):
            if FULL:
                for replacement in REPLACEMENTS:
                    yield (*root, *path), replacement
            elif (number + salt) % 3 == 0:
                yield (*root, *path), REPLACEMENTS[(number // 3 + salt) % len(REPLACEMENTS)]


def _mutated(request: dict[str, Any], path: tuple[Any, ...], replacement: Any) -> dict[str, Any]:
    result = copy.deepcopy(request)
    _get(result, path[:-1])[path[-1]] = copy.deepcopy(replacement)
    return result


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import DEFAULT_CONTENT_DIR, Settings

    base = Settings(
        environment="test",
        database_url=f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'f.sqlite3'}",
        content_dir=DEFAULT_CONTENT_DIR,
        auth=False,
        allow_insecure_fhir=True,
    )
    clock = FrozenClock()
    app = create_app(with_settings(base), clock=clock)
    yield app, clock
    dispose(app)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_mutation_of_a_fixture_is_a_server_error(fuzz_app, path: Path) -> None:
    """Each field of the fixture's FHIR data replaced by another JSON type: 200, 400 or 412."""
    app, clock = fuzz_app
    fixture = json.loads(path.read_text("utf-8"))
    request = fixture["request"]
    request.pop("fhirServer", None)  # a mutation must be judged on what was sent, not fetched
    request.pop("fhirAuthorization", None)
    clock.set(fixture["evalTime"])
    service = SERVICE_FOR_HOOK[request["hook"]]
    client = app.test_client()
    failures = []
    salt = FIXTURE_FILES.index(path)
    for where, replacement in _mutations(request, salt):
        body = _mutated(request, where, replacement)
        response = client.post(f"/cds-services/{service}", json=body)
        if response.status_code not in (200, 400, 412):
            failures.append((where, replacement, response.status_code))
        elif response.status_code == 200:
            problems = schemas.problems("hook-response", response.get_json())
            if problems:
                failures.append((where, replacement, problems[:1]))
    assert failures == []


def test_a_deeply_nested_draft_order_gets_its_card(fuzz_app) -> None:
    """An IM draft carrying extensions nested 600 containers deep still gets its card (no 500)."""
    app, clock = fuzz_app
    fixture = json.loads((FIXTURES / "order-sign" / "01-dorsogluteal-left-lg.json").read_text())
    clock.set(fixture["evalTime"])
    request = fixture["request"]
    draft = request["context"]["draftOrders"]["entry"][0]["resource"]
    draft["extension"] = "DEEP"
    deep = '[{"url": "x", "valueString": "y", "extension": ' * 300 + "[]" + "}]" * 300
    raw = json.dumps(request).replace('"DEEP"', deep)
    response = app.test_client().post(
        "/cds-services/im-injection-site-sign", data=raw, content_type="application/json"
    )
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["suggestions"][0]["actions"][0]["resource"]["id"] == draft["id"]
