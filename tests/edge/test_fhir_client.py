"""FhirClient against real HTTP servers on loopback: results, limits, and every server fault."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds_service.edge.fhir_client import FetchPolicy, FhirClient, is_loopback_host
from cds_service.logs import JsonFormatter

TOKEN = "s3cr3t-access-token"
LOOPBACK = ("127.0.0.0/8", "::1/128")
FHIR_JSON = "application/fhir+json"
#: How long a stalled server holds an answer: far beyond every timeout and deadline below, so a
#: client that waited for it cannot pass for one that gave up in time, however busy the machine.
STALL_SECONDS = 30.0
#: What a fetch may take beyond the timeout or deadline it is cut at (threads, sockets, a busy
#: machine); still far below STALL_SECONDS.
SLACK_SECONDS = 3.0


def bundle(*resources: dict, next_url: str | None = None, outcome: bool = False) -> dict:
    entries: list[dict] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    if outcome:
        entries.append(
            {
                "resource": {"resourceType": "OperationOutcome", "issue": []},
                "search": {"mode": "outcome"},
            }
        )
    links = [{"relation": "self", "url": "ignored"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}


def condition(cid: str) -> dict:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": "Patient/123"}}


def delayed(seconds: float, body: dict) -> Callable[[Request], Response]:
    def handler(_request: Request) -> Response:
        time.sleep(seconds)
        return Response(json.dumps(body), content_type=FHIR_JSON)

    return handler


def stalled(server: HTTPServer, body: dict) -> Callable[[Request], Response]:
    """A handler that holds its answer for STALL_SECONDS, or until the test ends."""

    def handler(_request: Request) -> Response:
        server.released.wait(STALL_SECONDS)
        return Response(json.dumps(body), content_type=FHIR_JSON)

    return handler


class _LoopbackServer(HTTPServer):
    """A threaded pytest-httpserver on 127.0.0.1 that stops in milliseconds, not 0.5 s.

    ``released`` is set at teardown: stalled handlers answer then, so none outlives its test.
    """

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", threaded=True)
        self.released = threading.Event()

    def thread_target(self) -> None:
        assert self.server is not None
        self.server.serve_forever(poll_interval=0.01)

    def stop(self) -> None:
        self.released.set()
        super().stop()


def _new_server() -> HTTPServer:
    server = _LoopbackServer()
    server.start()
    return server


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = _new_server()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def other_server() -> Iterator[HTTPServer]:
    """A second origin, standing for a host that must never see the token."""
    srv = _new_server()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def make_client() -> Iterator[Callable[..., FhirClient]]:
    clients: list[FhirClient] = []

    def make(**policy: object) -> FhirClient:
        policy.setdefault("allowed_networks", LOOPBACK)
        client = FhirClient(FetchPolicy(**policy))  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def base(server: HTTPServer) -> str:
    return server.url_for("/fhir")


@pytest.fixture
def raw_server() -> Iterator[Callable[[bytes, float], str]]:
    """A one-shot TCP server that sends fixed bytes, then holds the connection a while (cut
    short at teardown)."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []
    released = threading.Event()

    def start(payload: bytes, hold_seconds: float) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(payload)
                released.wait(hold_seconds)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        return f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"

    yield start
    released.set()
    for thread in threads:
        thread.join(timeout=5)
    for listener in listeners:
        listener.close()


# --- happy path ---------------------------------------------------------------------------


def test_fetches_reads_and_searches(server, make_client):
    """A read yields its resource, a search its Bundle entries, outcome entries dropped."""
    patient = {"resourceType": "Patient", "id": "123"}
    server.expect_request("/fhir/Patient/123").respond_with_json(patient)
    server.expect_request("/fhir/Condition", query_string="patient=123").respond_with_json(
        bundle(condition("c1"), condition("c2"), outcome=True)
    )
    server.expect_request("/fhir/Procedure", query_string="patient=123").respond_with_json(bundle())
    result = make_client().fetch(
        base(server),
        TOKEN,
        {
            "patient": "Patient/123",
            "conditions": "Condition?patient=123",
            "procedures": "Procedure?patient=123",
        },
    )
    assert result.failures == {}
    assert result.resources == {
        "patient": [patient],
        "conditions": [condition("c1"), condition("c2")],
        "procedures": [],
    }
    assert result.requests_made == 3


def test_sends_bearer_token_and_fhir_accept_header(server, make_client):
    """Each request carries Authorization: Bearer <token> and Accept: application/fhir+json."""
    server.expect_request(
        "/fhir/Condition", headers={"Authorization": f"Bearer {TOKEN}", "Accept": FHIR_JSON}
    ).respond_with_json(bundle(condition("c1")))
    result = make_client().fetch(base(server), TOKEN, {"conditions": "Condition?patient=1"})
    assert result.resources == {"conditions": [condition("c1")]}


def test_no_authorization_header_without_token(server, make_client):
    """Without an access token no Authorization header is sent at all."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle())
    result = make_client().fetch(base(server), None, {"conditions": "Condition?patient=1"})
    assert result.resources == {"conditions": []}
    (request, _), *_ = server.log
    assert "Authorization" not in request.headers


def test_vread_expects_the_resource(server, make_client):
    """A versioned read answers the resource itself, not a Bundle."""
    patient = {"resourceType": "Patient", "id": "123", "meta": {"versionId": "2"}}
    server.expect_request("/fhir/Patient/123/_history/2").respond_with_json(patient)
    result = make_client().fetch(base(server), TOKEN, {"p": "Patient/123/_history/2"})
    assert result.resources == {"p": [patient]}


def test_queries_run_in_parallel(server, make_client):
    """Seven queries each delayed 1 s finish together in about 1 s, not 7 s."""
    server.expect_request("/fhir/Condition").respond_with_handler(delayed(1.0, bundle()))
    client = make_client(timeout_seconds=10.0, deadline_seconds=20.0, max_workers=8)
    queries = {f"k{i}": f"Condition?patient={i}" for i in range(7)}
    started = time.monotonic()
    result = client.fetch(base(server), TOKEN, queries)
    elapsed = time.monotonic() - started
    assert result.failures == {}
    assert len(result.resources) == 7
    assert 1.0 <= elapsed < 1.0 + SLACK_SECONDS < 7.0, elapsed


def test_client_is_reusable_across_calls(server, make_client):
    """One client serves many hook calls on its pooled session."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle(condition("c1")))
    client = make_client()
    for _ in range(3):
        result = client.fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
        assert result.resources == {"c": [condition("c1")]}


def test_empty_queries_make_no_requests(make_client):
    """Nothing to fetch means no request and an empty result."""
    result = make_client().fetch("https://ehr.example/fhir", TOKEN, {})
    assert (result.resources, result.failures, result.requests_made) == ({}, {}, 0)


# --- pagination ---------------------------------------------------------------------------


def test_follows_next_links(server, make_client):
    """Pages linked by absolute and relative next links are read and concatenated in order."""
    page2 = server.url_for("/fhir/Condition?patient=1&page=2")
    server.expect_request("/fhir/Condition", query_string="patient=1").respond_with_json(
        bundle(condition("c1"), next_url=page2)
    )
    server.expect_request("/fhir/Condition", query_string="patient=1&page=2").respond_with_json(
        bundle(condition("c2"), next_url="Condition?patient=1&page=3")
    )
    server.expect_request("/fhir/Condition", query_string="patient=1&page=3").respond_with_json(
        bundle(condition("c3"))
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.resources == {"c": [condition("c1"), condition("c2"), condition("c3")]}
    assert result.requests_made == 3
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r, _ in server.log)


def test_page_cap_fails_the_key(server, make_client):
    """More pages than max_pages is a failure: a partial history is not passed on as complete."""
    for page in range(1, 5):
        server.expect_request("/fhir/Condition", query_string=f"page={page}").respond_with_json(
            bundle(condition(f"c{page}"), next_url=f"Condition?page={page + 1}")
        )
    result = make_client(max_pages=3).fetch(base(server), TOKEN, {"c": "Condition?page=1"})
    assert result.failures == {"c": "page cap"}
    assert result.resources == {}
    assert result.requests_made == 3


def test_next_link_loop_is_a_failure(server, make_client):
    """A next link pointing back at a page already read stops the key."""
    server.expect_request("/fhir/Condition").respond_with_json(
        bundle(condition("c1"), next_url="Condition?patient=1")
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "next link loop"}


def test_foreign_next_link_is_not_followed(server, other_server, make_client):
    """A next link to another origin fails the key and the token never goes there."""
    other_server.expect_request("/fhir/Condition").respond_with_json(bundle())
    server.expect_request("/fhir/Condition").respond_with_json(
        bundle(condition("c1"), next_url=other_server.url_for("/fhir/Condition?page=2"))
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "foreign next link"}
    assert other_server.log == []


def test_next_link_to_another_name_for_the_host_is_foreign(server, make_client):
    """Origins compare exactly: localhost is not the 127.0.0.1 the fhirServer named."""
    port = server.port
    server.expect_request("/fhir/Condition").respond_with_json(
        bundle(next_url=f"http://localhost:{port}/fhir/Condition?page=2")
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "foreign next link"}
    assert len(server.log) == 1


# --- redirects ----------------------------------------------------------------------------


def redirect(location: str, status: int = 302) -> Response:
    return Response(status=status, headers={"Location": location})


def test_same_origin_redirect_is_followed(server, make_client):
    """A redirect within the fhirServer's origin is followed, with the token."""
    patient = {"resourceType": "Patient", "id": "1"}
    server.expect_request("/fhir/Patient/1").respond_with_response(redirect("/r4/Patient/1", 301))
    server.expect_request("/r4/Patient/1").respond_with_json(patient)
    result = make_client().fetch(base(server), TOKEN, {"p": "Patient/1"})
    assert result.resources == {"p": [patient]}
    assert [r.headers["Authorization"] for r, _ in server.log] == [f"Bearer {TOKEN}"] * 2


def test_redirect_to_another_resource_is_refused(server, make_client):
    """A read redirected to a different patient's record is not taken for the one asked for."""
    server.expect_request("/fhir/Patient/1").respond_with_response(redirect("/fhir/Patient/2"))
    server.expect_request("/fhir/Patient/2").respond_with_json(
        {"resourceType": "Patient", "id": "2"}
    )
    result = make_client().fetch(base(server), TOKEN, {"p": "Patient/1"})
    assert result.failures == {"p": "not a Bundle/resource"}


def test_same_origin_redirect_of_a_search(server, make_client):
    """A search redirected within the origin yields the target's Bundle."""
    server.expect_request("/fhir/Condition").respond_with_response(redirect("/fhir/v2/Condition"))
    server.expect_request("/fhir/v2/Condition").respond_with_json(bundle(condition("c1")))
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.resources == {"c": [condition("c1")]}
    assert result.requests_made == 2


def test_foreign_redirect_is_not_followed(server, other_server, make_client):
    """A redirect to another origin fails the key and the token never goes there."""
    other_server.expect_request("/fhir/Condition").respond_with_json(bundle())
    server.expect_request("/fhir/Condition").respond_with_response(
        redirect(other_server.url_for("/fhir/Condition"), 307)
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "foreign redirect"}
    assert other_server.log == []


def test_redirect_loop_is_a_failure(server, make_client):
    """Two URLs redirecting to each other end as 'redirect loop', not an exception."""
    server.expect_request("/fhir/a").respond_with_response(redirect("/fhir/b"))
    server.expect_request("/fhir/b").respond_with_response(redirect("/fhir/a"))
    result = make_client().fetch(base(server), TOKEN, {"c": "a"})
    assert result.failures == {"c": "redirect loop"}
    assert result.requests_made == 2


def test_endless_redirect_chain_is_a_failure(server, make_client):
    """An ever-new redirect target is cut off after a few hops."""

    def next_hop(request: Request) -> Response:
        return redirect(f"/fhir/r{int(request.path.rsplit('r', 1)[1]) + 1}")

    server.expect_request(re.compile(r"/fhir/r\d+")).respond_with_handler(next_hop)
    result = make_client().fetch(base(server), TOKEN, {"c": "r0"})
    assert result.failures == {"c": "redirect loop"}
    assert result.requests_made == 6


# --- server faults ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 500, 503])
def test_error_status_is_a_failure(server, make_client, status):
    """An HTTP error status becomes 'http <status>' for that key only."""
    server.expect_request("/fhir/Condition").respond_with_json(
        {"resourceType": "OperationOutcome"}, status=status
    )
    server.expect_request("/fhir/Procedure").respond_with_json(bundle())
    result = make_client().fetch(
        base(server), TOKEN, {"c": "Condition?patient=1", "p": "Procedure?patient=1"}
    )
    assert result.failures == {"c": f"http {status}"}
    assert result.resources == {"p": []}


def test_html_body_is_not_json(server, make_client):
    """A 200 HTML page (a login portal, say) is 'not json'."""
    server.expect_request("/fhir/Condition").respond_with_data(
        "<html><body>Please log in</body></html>", content_type="text/html"
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "not json"}


def test_truncated_json_document(server, make_client):
    """A JSON document that stops mid-way is 'truncated json'."""
    server.expect_request("/fhir/Condition").respond_with_data(
        '{"resourceType": "Bundle", "entry": [{"resource": ', content_type=FHIR_JSON
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "truncated json"}


def test_body_shorter_than_content_length(raw_server, make_client):
    """A connection closed before Content-Length bytes arrived is 'truncated json'."""
    url = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 500\r\n\r\n"
        b'{"resourceType": "Bundle", "en',
        0.0,
    )
    result = make_client().fetch(url, TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "truncated json"}


def test_body_stalling_mid_way_is_a_timeout(raw_server, make_client):
    """A body that stops arriving for longer than the request timeout is 'timeout'."""
    url = raw_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\nContent-Length: 500\r\n\r\n"
        b'{"resourceType": "Bundle", "en',
        STALL_SECONDS,
    )
    client = make_client(timeout_seconds=1.0, deadline_seconds=STALL_SECONDS)
    started = time.monotonic()
    result = client.fetch(url, TOKEN, {"c": "Condition?patient=1"})
    elapsed = time.monotonic() - started
    assert result.failures == {"c": "timeout"}
    assert 1.0 <= elapsed < 1.0 + SLACK_SECONDS, elapsed


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("Condition?patient=1", {"resourceType": "OperationOutcome", "issue": []}),
        ("Condition?patient=1", {"resourceType": "Condition", "id": "1"}),
        ("Condition?patient=1", [condition("c1")]),
        ("Patient/123", {"resourceType": "Patient", "id": "999"}),
        ("Patient/123", bundle({"resourceType": "Patient", "id": "123"})),
        ("Patient/123", {"resourceType": "OperationOutcome", "issue": []}),
    ],
)
def test_wrong_kind_of_answer(server, make_client, query, body):
    """A search must answer a Bundle and a read the very resource asked for."""
    server.expect_request(f"/fhir/{query.partition('?')[0]}").respond_with_json(body)
    result = make_client().fetch(base(server), TOKEN, {"k": query})
    assert result.failures == {"k": "not a Bundle/resource"}


def test_oversized_body_is_a_failure(server, make_client):
    """A body larger than max_body_bytes is dropped as 'too large'."""
    server.expect_request("/fhir/Condition").respond_with_json(
        bundle(*(condition(f"c{i}") for i in range(100)))
    )
    result = make_client(max_body_bytes=1000).fetch(
        base(server), TOKEN, {"c": "Condition?patient=1"}
    )
    assert result.failures == {"c": "too large"}


def test_slow_response_is_a_timeout(server, make_client):
    """A server slower than the per-request timeout yields 'timeout' after about that time."""
    server.expect_request("/fhir/Condition").respond_with_handler(stalled(server, bundle()))
    client = make_client(timeout_seconds=1.0, deadline_seconds=STALL_SECONDS)
    started = time.monotonic()
    result = client.fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    elapsed = time.monotonic() - started
    assert result.failures == {"c": "timeout"}
    assert 1.0 <= elapsed < 1.0 + SLACK_SECONDS, elapsed


def test_connection_refused(make_client):
    """A port nobody listens on yields 'connection error'."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = make_client().fetch(f"http://127.0.0.1:{port}/fhir", TOKEN, {"c": "Condition?x=1"})
    assert result.failures == {"c": "connection error"}
    assert result.requests_made == 1


def test_deadline_cuts_off_a_slow_key(server, make_client):
    """A key slower than the deadline is 'deadline', the call returns at about the deadline (not
    when the slow key would have answered) and the fast key is kept."""
    server.expect_request("/fhir/Condition").respond_with_handler(stalled(server, bundle()))
    server.expect_request("/fhir/Procedure").respond_with_json(bundle())
    client = make_client(timeout_seconds=STALL_SECONDS * 2, deadline_seconds=2.0)
    started = time.monotonic()
    result = client.fetch(
        base(server), TOKEN, {"slow": "Condition?patient=1", "fast": "Procedure?patient=1"}
    )
    elapsed = time.monotonic() - started
    assert result.failures == {"slow": "deadline"}
    assert result.resources == {"fast": []}
    assert 2.0 <= elapsed < 2.0 + SLACK_SECONDS, elapsed


def test_deadline_stops_pagination(server, make_client):
    """Pages still to come when the deadline passes are not requested: no page is asked for
    after the fetch has returned, though the server keeps offering next pages."""
    page_seconds = 1.0
    asked: list[float] = []  # when each page request arrived

    def page(request: Request) -> Response:
        asked.append(time.monotonic())
        return delayed(page_seconds, bundle(condition("c"), next_url=f"Condition?p={len(asked)}"))(
            request
        )

    server.expect_request("/fhir/Condition").respond_with_handler(page)
    client = make_client(timeout_seconds=STALL_SECONDS, deadline_seconds=2.5, max_pages=10)
    result = client.fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    returned = time.monotonic()
    assert result.failures == {"c": "deadline"}
    time.sleep(page_seconds * 3)  # a client still paging would ask for two or three more
    assert len(asked) >= 2, asked  # it did page before the deadline
    # At most the request that was already on its way when the deadline passed arrives later.
    assert len([t for t in asked if t > returned]) <= 1, [t - returned for t in asked]


def test_queued_keys_share_the_deadline(server, make_client):
    """With fewer workers than keys, keys still queued at the deadline fail as 'deadline' and
    are never requested: they do not get a deadline of their own once a worker is free."""
    asked: list[str] = []

    def answer(request: Request) -> Response:
        asked.append(request.args["p"])
        if request.args["p"] in ("0", "1"):
            return Response(json.dumps(bundle()), content_type=FHIR_JSON)
        return stalled(server, bundle())(request)

    server.expect_request("/fhir/Condition").respond_with_handler(answer)
    client = make_client(timeout_seconds=STALL_SECONDS * 2, deadline_seconds=2.0, max_workers=2)
    started = time.monotonic()
    result = client.fetch(base(server), TOKEN, {f"k{i}": f"Condition?p={i}" for i in range(6)})
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 2.0 + SLACK_SECONDS, elapsed
    assert result.resources == {"k0": [], "k1": []}
    assert result.failures == dict.fromkeys(["k2", "k3", "k4", "k5"], "deadline")
    time.sleep(0.5)  # time for a worker freed at the deadline to (wrongly) start a queued key
    assert sorted(asked) == ["0", "1", "2", "3"]


# --- transport security -------------------------------------------------------------------


def test_plain_http_to_a_remote_host_is_refused(make_client):
    """http:// outside loopback fails every key as 'insecure fhirServer' without a request."""
    result = make_client().fetch("http://ehr.example/fhir", TOKEN, {"a": "Patient/1", "b": "X"})
    assert result.failures == {"a": "insecure fhirServer", "b": "insecure fhirServer"}
    assert result.requests_made == 0


def test_plain_http_allowed_by_policy(server, make_client):
    """allow_insecure lets http:// through (for closed test networks); loopback always may."""
    server.expect_request("/fhir/Patient/1").respond_with_json(
        {"resourceType": "Patient", "id": "1"}
    )
    client = make_client(allow_insecure=True)
    result = client.fetch(base(server), TOKEN, {"p": "Patient/1"})
    assert result.resources == {"p": [{"resourceType": "Patient", "id": "1"}]}


@pytest.mark.parametrize("fhir_server", ["ftp://ehr.example/fhir", "ehr.example/fhir", "https://"])
def test_unusable_fhir_server(make_client, fhir_server):
    """A fhirServer that is not an http(s) URL fails every key as 'bad fhirServer'."""
    result = make_client().fetch(fhir_server, TOKEN, {"p": "Patient/1"})
    assert result.failures == {"p": "bad fhirServer"}


@pytest.mark.parametrize("query", ["/Patient/1", "https://evil.example/Patient/1", "//evil/x", ""])
def test_query_must_be_relative(server, make_client, query):
    """A query that is not relative to fhirServer is refused, so it cannot redirect the token."""
    result = make_client().fetch(base(server), TOKEN, {"q": query})
    assert result.failures == {"q": "bad query"}
    assert server.log == []


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("ehr.example", False),
        ("localhost.evil.example", False),
        ("app.localhost", False),
    ],
)
def test_loopback_hosts(host, loopback):
    """Only 127.0.0.0/8, ::1 and localhost count as loopback."""
    assert is_loopback_host(host) is loopback


def test_cookies_are_not_carried_between_calls(server, make_client):
    """A cookie set by the FHIR server is not sent with the next hook's request."""
    server.expect_request("/fhir/Condition").respond_with_response(
        Response(
            json.dumps(bundle()), content_type=FHIR_JSON, headers={"Set-Cookie": "sid=abc; Path=/"}
        )
    )
    client = make_client()
    client.fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    client.fetch(base(server), "other-token", {"c": "Condition?patient=2"})
    assert [r.headers.get("Cookie") for r, _ in server.log] == [None, None]


def test_log_names_keys_not_token_or_data(server, make_client, caplog):
    """The log has key, status, count and time, never the token, the ids or the bodies."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle(condition("secret-c1")))
    server.expect_request("/fhir/Procedure").respond_with_json({}, status=401)
    with caplog.at_level(logging.DEBUG, logger="cds_service.fhir"):
        make_client().fetch(
            base(server),
            TOKEN,
            {"conditions": "Condition?patient=pat-77", "procs": "Procedure"},
            hook_instance="hi-1",
        )
    records = [r for r in caplog.records if r.name == "cds_service.fhir"]
    assert {r.hook_instance for r in records} == {"hi-1"}
    by_key = {r.key: r for r in records}
    ok, refused = by_key["conditions"], by_key["procs"]
    assert (ok.status, ok.pages, ok.count, ok.event) == (200, 1, 1, "fhir_fetch")
    assert (refused.reason, refused.levelname) == ("http 401", "WARNING")
    assert all(isinstance(r.elapsed_ms, float) for r in records)
    text = "\n".join(JsonFormatter().format(r) for r in records)
    for secret in (TOKEN, "pat-77", "secret-c1"):
        assert secret not in text
