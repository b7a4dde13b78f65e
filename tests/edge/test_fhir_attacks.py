"""Issue 11, the FHIR fetch path under attack, reproduced on loopback and now held.

* a FHIR server dribbling a byte every 0.3 s (headers or body) must not keep pool threads or
  sockets past the hook's deadline, nor starve callers of other FHIR servers (item 5);
* one origin holds at most ``max_per_origin`` queries; beyond, "origin busy" at once (item 5);
* redirect Locations and Bundle next links that URL parsers read differently never carry the
  token to another host (item 6);
* ``fhirServer`` is a base URL on an allowed origin and address, checked before any connection,
  resolved once (item 7);
* the bytes read from FHIR per hook call are bounded; over the bound a key is unavailable, never
  partial (item 10); a huge body stops at the deadline; failures never name exception classes.

Deadline tests use servers that stall seconds beyond the deadline and generous bounds far below
the attack's duration, so a busy machine does not make them flaky.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from cds_service.edge import fhir_client
from cds_service.edge.fhir_client import (
    FetchPolicy,
    FhirClient,
    parse_base_url,
    parse_url_strictly,
)
from tests.edge.test_fhir_client import LOOPBACK, TOKEN, _new_server, base, bundle, condition

SEVEN_KEYS = {
    key: f"{kind}?patient=p1"
    for key, kind in [
        ("patient", "Patient"),
        ("conditions", "Condition"),
        ("procedures", "Procedure"),
        ("observations", "Observation"),
        ("medicationAdministrations", "MedicationAdministration"),
        ("deviceRequests", "DeviceRequest"),
        ("appointments", "Appointment"),
    ]
}


class Dribbler:
    """A TCP server answering every request one byte every ``interval`` seconds, for ever.

    ``mode`` "headers" dribbles the status line and headers; "body" sends the headers at once
    (a 1 MB Content-Length) and dribbles the body. It records when each connection was opened
    and when the client gave it up (closed or reset); ``stop()`` ends everything.
    """

    def __init__(self, mode: str, interval: float = 0.3) -> None:
        self.mode = mode
        self.interval = interval
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.opened = 0
        self.closed: list[float] = []
        self.tokens_seen = 0
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.opened += 1
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            try:
                request = conn.recv(65536)
            except OSError:
                return
            if TOKEN.encode() in request:
                with self.lock:
                    self.tokens_seen += 1
            if self.mode == "body":
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                conn.sendall(head + b"Content-Length: 1000000\r\n\r\n")
                payload = b'{"resourceType": "Bundle", "entry": [' + b" " * 10_000_000
            else:
                payload = b"HTTP/1.1 200 OK\r\nX-Dribble: " + b"a" * 10_000_000
            for index in range(len(payload)):
                if self.stopped.wait(self.interval):
                    return
                try:
                    conn.sendall(payload[index : index + 1])
                except OSError:
                    break
            with self.lock:
                self.closed.append(time.monotonic())

    def still_open(self) -> int:
        with self.lock:
            return self.opened - len(self.closed)

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()
        self.acceptor.join(5)
        for thread in list(self.threads):
            thread.join(5)


@pytest.fixture
def dribbler() -> Iterator[Callable[[str], Dribbler]]:
    servers: list[Dribbler] = []

    def start(mode: str) -> Dribbler:
        server = Dribbler(mode)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    srv = _new_server()
    try:
        yield srv
    finally:
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

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def workers_in_fetch(client: FhirClient) -> int:
    """Pool threads of ``client`` currently inside a fetch (not idle on the queue)."""
    threads = {t.ident: t for t in threading.enumerate() if t.name.startswith("fhir-fetch")}
    busy = 0
    for ident, frame in sys._current_frames().items():
        if ident not in threads or threads[ident] not in client._executor._threads:
            continue
        walker = frame
        while walker is not None:
            if walker.f_code.co_name in ("_fetch_key", "getaddrinfo"):
                busy += 1
                break
            walker = walker.f_back
    return busy


def wait_until(condition: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "condition never held"
        time.sleep(0.02)
    return time.monotonic() - started


# --- item 5: a dribbling server can neither keep threads nor starve the pool ----------------


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_dribbling_server_cannot_keep_pool_threads(dribbler, make_client, server, mode):
    """24 hook calls against a server dribbling a byte every 0.3 s: every call returns by its
    deadline, every socket is closed and every pool thread is back within seconds (before the
    fix: held for hours), and a healthy FHIR server is still served at once."""
    hostile = dribbler(mode)
    server.expect_request("/fhir/Condition").respond_with_json(bundle(condition("c1")))
    client = make_client(
        timeout_seconds=0.4, deadline_seconds=0.9, max_workers=64, max_per_origin=16
    )
    origin = ("http", "127.0.0.1", hostile.port)
    with ThreadPoolExecutor(24) as hooks:
        started = time.monotonic()
        results = list(hooks.map(lambda _: client.fetch(hostile.url, TOKEN, SEVEN_KEYS), range(24)))
        all_done = time.monotonic() - started
    assert all(not r.resources for r in results)
    reasons = {reason for r in results for reason in r.failures.values()}
    assert reasons <= {"deadline", "origin busy", "timeout"}, reasons
    assert "origin busy" in reasons  # 168 queries, at most 16 may hold the origin
    assert all_done < 10, all_done  # 24 calls, each cut at 0.9 s (the attack lasts hours)

    returned = wait_until(lambda: workers_in_fetch(client) == 0, 5)
    assert client.in_flight(origin) == 0
    wait_until(lambda: hostile.still_open() == 0, 5)
    assert hostile.opened <= 24 * 16  # never more sockets than slots

    healthy_started = time.monotonic()
    healthy = client.fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert healthy.resources == {"c": [condition("c1")]}
    assert time.monotonic() - healthy_started < 2
    assert returned < 5


def test_one_origin_holds_at_most_its_share(dribbler, make_client, server):
    """With max_per_origin=4, a stuck origin holds 4 queries; more for it fail at once as
    'origin busy' while another origin's queries go through."""
    hostile = dribbler("headers")
    server.expect_request("/fhir/Condition").respond_with_json(bundle())
    client = make_client(timeout_seconds=2.0, deadline_seconds=3.0, max_workers=8, max_per_origin=4)
    with ThreadPoolExecutor(1) as background:
        stuck = background.submit(client.fetch, hostile.url, TOKEN, SEVEN_KEYS)
        wait_until(lambda: client.in_flight(("http", "127.0.0.1", hostile.port)) == 4, 5)
        started = time.monotonic()
        refused = client.fetch(hostile.url, TOKEN, {"c": "Condition?patient=2"})
        assert refused.failures == {"c": "origin busy"}
        assert time.monotonic() - started < 0.5
        other = client.fetch(base(server), TOKEN, {f"k{i}": "Condition?x=1" for i in range(4)})
        assert other.failures == {}
        first = stuck.result(10)
    assert sorted(first.failures.values()) == ["deadline"] * 4 + ["origin busy"] * 3


def test_huge_body_stops_at_the_deadline(make_client):
    """A body streamed for ever, fast: reading stops at the deadline (0.9 s stays about 0.9 s)."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n\r\n[")
            block = b"0," * 32768
            while not stop.is_set():
                try:
                    conn.sendall(block)
                except OSError:
                    return
                time.sleep(0.005)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = make_client(
            timeout_seconds=0.4,
            deadline_seconds=0.9,
            max_bytes_per_call=1 << 30,
            max_body_bytes=1 << 30,
        )
        started = time.monotonic()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        result = client.fetch(url, TOKEN, {"c": "Condition?patient=1"})
        elapsed = time.monotonic() - started
        assert result.failures == {"c": "deadline"}
        assert elapsed < 1.6, elapsed
    finally:
        stop.set()
        listener.close()
        thread.join(5)


# --- item 6: URL-parser differentials never carry the token elsewhere -----------------------


@pytest.fixture
def evil() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.expect_request("/", method="GET").respond_with_json(bundle())
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def differentials(good: int, bad: int) -> list[str]:
    """Links that one parser or another reads as the evil host (port ``bad``)."""
    g, e = f"127.0.0.1:{good}", f"127.0.0.1:{bad}"
    return [
        f"http://{e}\\@{g}/fhir/Condition?page=2",
        f"http://{e}\\\\@{g}/fhir/Condition?page=2",
        f"http:\\\\{e}/fhir/Condition?page=2",
        f"http:/\\{e}/fhir/Condition?page=2",
        f"http://{g}@{e}/fhir/Condition?page=2",
        f"http://user:pw@{e}/fhir/Condition?page=2",
        f"http://{e}#@{g}/fhir/Condition?page=2",
        f"http://{e}?@{g}/fhir/Condition?page=2",
        f"http://{e}\t@{g}/fhir/Condition?page=2",
        f"http://{e}\n@{g}/fhir/Condition?page=2",
        f"http://{e}\r\n@{g}/",
        f"http://{e} @{g}/",
        f" http://{e}/fhir/Condition?page=2",
        f"http://{e}%40{g}/fhir/Condition?page=2",
        f"http://{e}%2540{g}/",
        f"http://[::ffff:127.0.0.1%25lo]:{bad}/fhir/Condition",
        f"http://[::1%lo]:{bad}/fhir/Condition",
        f"HTTP://{e}/fhir/Condition?page=2",
        f"hTTp://{e}/fhir/Condition?page=2",
        f"//{e}/fhir/Condition?page=2",
        f"http://127.0.0.1.:{bad}/fhir/Condition?page=2",
        f"http://localhost:{bad}/fhir/Condition?page=2",
        f"http://127.1:{bad}/fhir/Condition?page=2",
        f"http://0x7f000001:{bad}/fhir/Condition?page=2",
        f"http://{e}\uff0f@{g}/",
        f"http://{e}\u3002{g}/",
        f"http://{g}:{bad}/",
        f"http://{e}:80/fhir/Condition",
        f"http://{e}\x00@{g}/",
        f"http://{e}/\x7f",
    ]


@pytest.mark.parametrize("how", ["next link", "redirect"])
def test_url_parser_differentials_never_carry_the_token(server, evil, make_client, how):
    """None of the corpus sends anything to the evil server; each key fails."""
    corpus = differentials(server.port, evil.port)
    if how == "redirect":  # a header cannot carry line breaks or non-Latin-1 characters
        corpus = [u for u in corpus if u.isascii() and "\r" not in u and "\n" not in u]
    for index, link in enumerate(corpus):
        path = f"/fhir/q{index}"
        if how == "next link":
            server.expect_request(path).respond_with_json(bundle(condition("c"), next_url=link))
        else:
            server.expect_request(path).respond_with_response(
                Response(status=302, headers={"Location": link})
            )
    client = make_client(allow_insecure=True, max_workers=8)
    queries = {f"k{i}": f"q{i}" for i in range(len(corpus))}
    result = client.fetch(base(server), TOKEN, queries)
    assert evil.log == [], [r.url for r, _ in evil.log]
    assert result.resources == {}, sorted(result.resources)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://fhir-host/x", ("http", "fhir-host", 80)),
        ("HTTP://FHIR-Host:80/x", ("http", "fhir-host", 80)),
        ("https://fhir-host:443/x?y=a|b", ("https", "fhir-host", 443)),
        ("https://[::1]:8443/x", ("https", "::1", 8443)),
        ("http://fhir-host./x", ("http", "fhir-host.", 80)),
    ],
)
def test_strict_parser_reads_origins_like_the_connection(url, origin):
    """Scheme and host in lower case, default port explicit or not; a trailing dot differs."""
    target = parse_url_strictly(url)
    assert target is not None
    assert target.origin == origin


@pytest.mark.parametrize(
    "url",
    [
        "http://evil:9000\\@fhir-host/x",
        "http://fhir-host@evil/",
        "http://a:b@fhir-host/",
        "http://evil%40fhir-host/",
        "http://[fe80::1%25eth0]/",
        "http://fhir\thost/",
        "http://fhir-host/\n",
        "ftp://fhir-host/",
        "http:///x",
        "http://fhir-host:0/",
        "http://fhir-host:99999/",
        "http://fhir_host\u00e9/",
        "",
    ],
)
def test_strict_parser_refuses_ambiguous_urls(url):
    assert parse_url_strictly(url) is None


# --- item 7: fhirServer is a base URL on an allowed origin and address ----------------------


@pytest.mark.parametrize(
    "suffix",
    ["?_format=json", "#frag", "/Patient?x=1#", "?"],
)
def test_fhir_server_must_be_a_base_url(server, make_client, suffix):
    """'?' and '#' would let the caller choose the path: refused before any connection."""
    result = make_client().fetch(base(server) + suffix, TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "bad fhirServer"}
    assert server.log == []


def test_fhir_server_with_userinfo_is_refused(server, make_client):
    url = base(server).replace("http://", "http://user:pw@")
    result = make_client().fetch(url, TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "bad fhirServer"}
    assert server.log == []


def test_issuer_may_only_name_its_own_fhir_servers(server, make_client):
    """With the allow-list enforced, an issuer's call reaches only that issuer's base URLs."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle())
    allowed = {"https://ehr.example": (base(server),), "https://other.example": ()}
    client = make_client(issuer_origins=allowed)
    query = {"c": "Condition?patient=1"}
    assert client.fetch(base(server), TOKEN, query, issuer="https://ehr.example").failures == {}
    assert len(server.log) == 1
    for issuer in ("https://other.example", "https://unknown.example", None):
        result = client.fetch(base(server), TOKEN, query, issuer=issuer)
        assert result.failures == {"c": "origin not allowed"}
    sideways = base(server).replace("/fhir", "/admin")
    result = client.fetch(sideways, TOKEN, query, issuer="https://ehr.example")
    assert result.failures == {"c": "origin not allowed"}
    assert len(server.log) == 1


def test_origin_entry_allows_any_path_on_it(server, make_client):
    server.expect_request("/r4/Condition").respond_with_json(bundle())
    origin = f"http://127.0.0.1:{server.port}"
    client = make_client(issuer_origins={"https://ehr.example": (origin,)})
    result = client.fetch(
        origin + "/r4", TOKEN, {"c": "Condition?patient=1"}, issuer="https://ehr.example"
    )
    assert result.failures == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/fhir",
        "http://10.0.0.1/fhir",
        "http://192.168.1.1/fhir",
        "http://172.16.0.1/fhir",
        "http://0.0.0.0/fhir",
        "http://[::ffff:169.254.169.254]/fhir",
        "http://100.64.0.1/fhir",
        "http://224.0.0.1/fhir",
    ],
)
def test_non_global_addresses_are_refused_without_a_connection(make_client, url, monkeypatch):
    """Link-local, private, shared, unspecified, multicast: refused unless explicitly allowed."""
    monkeypatch.setattr(
        fhir_client.socket, "socket", lambda *a, **k: pytest.fail("a socket was opened")
    )
    client = make_client(allow_insecure=True)
    result = client.fetch(url, TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "address not allowed"}
    assert result.requests_made == 0


def test_loopback_refused_unless_allowed(server, make_client):
    """Loopback is a non-global address too: refused without the allowance (production)."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle())
    strict = make_client(allowed_networks=())
    assert strict.fetch(base(server), TOKEN, {"c": "Condition?x=1"}).failures == {
        "c": "address not allowed"
    }
    named = base(server).replace("127.0.0.1", "localhost")
    assert strict.fetch(named, TOKEN, {"c": "Condition?x=1"}).failures == {
        "c": "address not allowed"
    }
    assert server.log == []
    assert make_client().fetch(base(server), TOKEN, {"c": "Condition?x=1"}).failures == {}


def test_names_are_resolved_once_and_the_checked_address_is_used(server, make_client, monkeypatch):
    """A second DNS answer (rebinding) is never asked for: one lookup per call, every request
    connects to the address that was checked."""
    server.expect_request("/fhir/Condition").respond_with_json(bundle(condition("c")))
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        lookups.append(host)
        if len(lookups) > 1:
            return real("169.254.169.254", port, *args, **kwargs)
        return real("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(fhir_client.socket, "getaddrinfo", rebinding)
    client = make_client(allow_insecure=True)
    url = f"http://fhir.test:{server.port}/fhir"
    result = client.fetch(url, TOKEN, {f"k{i}": "Condition?x=1" for i in range(5)})
    assert result.failures == {}
    assert lookups == ["fhir.test"]
    assert all(r.headers["Host"] == f"fhir.test:{server.port}" for r, _ in server.log)


@pytest.mark.parametrize(
    "entry", ["https://ehr/fhir?x=1", "ftp://ehr/", "not a url", "https://u@ehr/"]
)
def test_allow_list_entries_must_be_base_urls(entry):
    with pytest.raises(ValueError, match="base URL"):
        FetchPolicy(issuer_origins={"https://ehr": (entry,)})
    assert parse_base_url(entry) is None


# --- item 10: bytes per hook call are bounded ---------------------------------------------


def test_bytes_per_hook_are_bounded_and_keys_never_partial(server, make_client):
    """Seven 60 kB answers against a 200 kB budget: some keys fail as 'hook byte limit' and
    are absent; those kept are complete."""
    big = bundle(*(condition(f"c{i}-" + "x" * 200) for i in range(250)))
    size = len(json.dumps(big))
    assert 50_000 < size < 100_000
    server.expect_request("/fhir/Condition").respond_with_json(big)
    client = make_client(max_bytes_per_call=200_000, max_workers=8)
    result = client.fetch(base(server), TOKEN, {f"k{i}": "Condition?x=1" for i in range(7)})
    assert set(result.failures.values()) == {"hook byte limit"}
    assert 1 <= len(result.resources) <= 3
    assert all(len(resources) == 250 for resources in result.resources.values())


def test_endless_fast_body_hits_the_byte_limit(make_client):
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n\r\n[")
            while not stop.is_set():
                try:
                    conn.sendall(b"{}," * 65536)
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client = make_client(deadline_seconds=5.0, max_bytes_per_call=2_000_000)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/fhir"
        result = client.fetch(url, TOKEN, {"c": "Condition?patient=1"})
        assert result.failures == {"c": "hook byte limit"}
    finally:
        stop.set()
        listener.close()
        thread.join(5)


# --- low: failures never name exception classes ---------------------------------------------


def test_internal_errors_do_not_name_the_exception(server, make_client, monkeypatch):
    server.expect_request("/fhir/Condition").respond_with_json(bundle())

    def broken(*_args: object) -> None:
        raise TypeError("boom")

    monkeypatch.setattr(fhir_client, "_collect", broken)
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "internal error"}


def test_deeply_nested_json_is_not_json(server, make_client):
    server.expect_request("/fhir/Condition").respond_with_data(
        "[" * 100_000 + "]" * 100_000, content_type="application/fhir+json"
    )
    result = make_client().fetch(base(server), TOKEN, {"c": "Condition?patient=1"})
    assert result.failures == {"c": "not json"}


# --- TLS: the checked address is connected to, the certificate is checked for the name --------


@pytest.fixture
def tls_server(tmp_path) -> Iterator[tuple[HTTPServer, str]]:
    """An https FHIR server on loopback with a self-signed certificate for ``localhost``."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = HTTPServer(host="127.0.0.1", ssl_context=context)
    server.start()
    try:
        yield server, str(cert_path)
    finally:
        server.clear()
        server.stop()


def test_https_checks_the_certificate_for_the_name(tls_server, make_client):
    """https to a name: connects to the checked address, verifies the certificate for the name,
    sends the token; an untrusted certificate is 'tls error' and nothing is sent."""
    import ssl

    server, ca = tls_server
    server.expect_request("/fhir/Condition").respond_with_json(bundle(condition("c1")))
    url = f"https://localhost:{server.port}/fhir"
    untrusted = make_client().fetch(url, TOKEN, {"c": "Condition?patient=1"})
    assert untrusted.failures == {"c": "tls error"}
    assert server.log == []
    client = make_client()
    client._tls = ssl.create_default_context(cafile=ca)
    result = client.fetch(url, TOKEN, {"c": "Condition?patient=1"})
    assert result.resources == {"c": [condition("c1")]}
    (request, _), *_ = server.log
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
