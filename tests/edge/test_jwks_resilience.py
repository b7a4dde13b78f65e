"""A hostile or failing JWKS endpoint must not cost inbound requests anything (issue 11, item 3).

Each test runs the attack on loopback against a real HTTP JWKS server (``hostile_jwks.py``):
black-holed (accepts, never answers), dribbling (one byte every 0.5 s), failing, oversized, or
rotating its keys.  Timing bounds are generous (far below each attack's duration) and waits poll
with deadlines, so the tests hold on a busy machine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cds_service.edge.jwks import parse_jwk_set
from cds_service.edge.jwt_auth import AuthenticationError, JwtPolicy, JwtVerifier
from cds_service.edge.replay_guard import SqlReplayGuard

from .conftest import AUDIENCE, ISSUER, NOW, SigningKey, TokenMinter
from .hostile_jwks import HostileJwks

#: The attack lasts this long (a fetch deadline this long is what the old client effectively had).
ATTACK_SECONDS = 30.0
#: What an inbound request may cost while the JWKS is under attack (generous: the wait is 1 s).
REQUEST_BOUND = 3.0

MakeVerifier = Callable[..., JwtVerifier]


@pytest.fixture
def hostile(ec_key: SigningKey, rsa_key: SigningKey) -> Iterator[HostileJwks]:
    with HostileJwks() as server:
        server.keys = [ec_key.public_jwk(), rsa_key.public_jwk()]
        yield server


@pytest.fixture
def make(hostile: HostileJwks, replay_guard: SqlReplayGuard) -> Iterator[MakeVerifier]:
    """Verifiers trusting ``ISSUER`` -> the hostile server; all closed at the end."""
    made: list[JwtVerifier] = []

    def build(**fields: Any) -> JwtVerifier:
        fields.setdefault("issuers", {ISSUER: hostile.url})
        verifier = JwtVerifier(JwtPolicy(**fields), replay_guard, clock=lambda: NOW)
        made.append(verifier)
        return verifier

    yield build
    for verifier in made:
        verifier.close()


def poll(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def timed_verify(verifier: JwtVerifier, token: str) -> tuple[float, str | None]:
    """(seconds taken, refusal reason or None when accepted)."""
    started = time.monotonic()
    try:
        verifier.verify(TokenMinter.bearer(token), AUDIENCE)
        reason = None
    except AuthenticationError as error:
        reason = error.reason
    return time.monotonic() - started, reason


def status(verifier: JwtVerifier) -> Any:
    return verifier.key_set_status()[ISSUER]


@pytest.fixture
def jwks_log() -> Iterator[list[logging.LogRecord]]:
    """Records of the JWKS refresher's logger (the app's logging does not propagate)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("cds_service.edge.jwks")
    handler, level = Keep(level=logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


# --- black hole and dribble: requests do not wait ---------------------------------------------


@pytest.mark.parametrize("attack", ["blackhole", "dribble"])
def test_hostile_jwks_costs_known_kids_nothing_and_unknown_kids_a_bounded_wait(
    make: MakeVerifier,
    hostile: HostileJwks,
    mint: TokenMinter,
    ec_key: SigningKey,
    rsa_key: SigningKey,
    attack: str,
) -> None:
    """While a refresh hangs on a black-holed or dribbling JWKS for the attack's 30 s, tokens with
    a known kid verify at once and an unknown kid is refused within a bounded wait."""
    verifier = make(jwks_timeout_seconds=ATTACK_SECONDS, jwks_refresh_cooldown_seconds=0)
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    hostile.mode = attack

    took, reason = timed_verify(verifier, mint.sign(ec_key, kid="rotated-or-random"))
    assert reason is not None and "kid unknown" in reason
    assert took < REQUEST_BOUND
    assert poll(lambda: hostile.requests == 2)  # the refresh is now hanging on the attack

    known = [timed_verify(verifier, mint.sign(key)) for key in (ec_key, rsa_key) * 10]
    assert all(reason is None for _, reason in known)
    assert max(took for took, _ in known) < 2.0
    took, reason = timed_verify(verifier, mint.sign(ec_key, kid="another-random"))
    assert reason is not None and took < REQUEST_BOUND
    assert status(verifier).failures == 0  # the hostile fetch is still in flight

    started = time.monotonic()
    verifier.close()  # aborts the hanging fetch
    assert time.monotonic() - started < REQUEST_BOUND
    assert poll(lambda: len(hostile.held) == 1, timeout=10)
    assert hostile.held[0] < 10


@pytest.mark.parametrize("attack", ["blackhole", "dribble"])
def test_a_fetch_has_a_hard_total_deadline(
    make: MakeVerifier,
    hostile: HostileJwks,
    mint: TokenMinter,
    ec_key: SigningKey,
    attack: str,
    jwks_log: list[logging.LogRecord],
) -> None:
    """A black-holed or dribbling JWKS is dropped at the fetch deadline (1 s here), not when the
    server stops; the failure is logged once and the old keys keep serving."""
    verifier = make(jwks_timeout_seconds=1.0, jwks_refresh_cooldown_seconds=0)
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    hostile.mode = attack
    started = time.monotonic()
    timed_verify(verifier, mint.sign(ec_key, kid="unknown"))
    assert poll(lambda: status(verifier).failures >= 1, timeout=15)
    failed_after = time.monotonic() - started
    assert failed_after < 6  # 1 s deadline, plus a busy machine's slack
    assert "within 1 s" in (status(verifier).last_failure or "")
    assert poll(lambda: len(hostile.held) >= 1, timeout=10)
    assert hostile.held[0] < 6  # the server saw the connection dropped
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    warnings = [r for r in jwks_log if r.levelno == logging.WARNING]
    assert len(warnings) == status(verifier).failures
    assert "keeps serving" in warnings[0].getMessage()


# --- failure: the last good key set serves, for a bounded time ---------------------------------


def test_last_good_keys_keep_verifying_while_the_jwks_is_down(
    make: MakeVerifier,
    hostile: HostileJwks,
    mint: TokenMinter,
    ec_key: SigningKey,
    jwks_log: list[logging.LogRecord],
) -> None:
    """Periodic refreshes fail (500) and each failure is logged once, without any token; tokens
    signed with the last good keys are still accepted."""
    verifier = make(jwks_cache_seconds=0.2, jwks_refresh_cooldown_seconds=0)
    first = mint.sign(ec_key)
    assert timed_verify(verifier, first)[1] is None
    hostile.mode = "error"
    assert poll(lambda: status(verifier).failures >= 2)
    token = mint.sign(ec_key)
    took, reason = timed_verify(verifier, token)
    assert reason is None and took < 2.0
    warnings = [r.getMessage() for r in jwks_log if r.levelno == logging.WARNING]
    assert len(warnings) >= 2 and all("http 500" in w for w in warnings)
    assert not any(token in w or first in w for w in warnings)
    assert len(warnings) == status(verifier).failures or len(warnings) == (
        status(verifier).failures - 1  # a failure being recorded while we read
    )


def test_keys_older_than_the_staleness_limit_are_refused_until_a_refresh_succeeds(
    make: MakeVerifier, hostile: HostileJwks, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """Past ``jwks_max_stale_seconds`` without a successful refresh the issuer's tokens are
    refused; once the JWKS answers again they are accepted."""
    verifier = make(
        jwks_cache_seconds=0.2, jwks_refresh_cooldown_seconds=0, jwks_max_stale_seconds=1.0
    )
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    hostile.mode = "error"
    assert poll(lambda: not status(verifier).usable)
    took, reason = timed_verify(verifier, mint.sign(ec_key))
    assert reason is not None and "older than" in reason and took < REQUEST_BOUND
    hostile.mode = "serve"
    assert poll(lambda: timed_verify(verifier, mint.sign(ec_key))[1] is None)


# --- unknown kids: at most one fetch per cooldown ---------------------------------------------


def test_a_flood_of_unknown_kids_fetches_at_most_once_per_cooldown(
    make: MakeVerifier, hostile: HostileJwks, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """300 tokens with random kids from 12 threads cause one refetch (cooldown 60 s), and each
    is refused promptly; the trusted kid still verifies."""
    verifier = make(jwks_refresh_cooldown_seconds=60)
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    assert hostile.requests == 1
    tokens = [mint.sign(ec_key, kid=f"random-{n}") for n in range(300)]
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda t: timed_verify(verifier, t), tokens))
    assert all(reason is not None and "kid unknown" in reason for _, reason in results)
    assert max(took for took, _ in results) < REQUEST_BOUND
    assert hostile.requests <= 2
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None


# --- rotation ---------------------------------------------------------------------------------


def test_a_new_kid_is_usable_within_seconds_and_a_removed_one_is_refused_after_a_refresh(
    make: MakeVerifier,
    hostile: HostileJwks,
    mint: TokenMinter,
    ec_key: SigningKey,
    rotated_key: SigningKey,
) -> None:
    """The client publishes a new key and signs with it at once: accepted within seconds.  It
    withdraws the old key: refused once the next (periodic) refresh has seen the new set."""
    verifier = make(jwks_cache_seconds=1.0, jwks_refresh_cooldown_seconds=0.5)
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    hostile.keys = [ec_key.public_jwk(), rotated_key.public_jwk()]
    published = time.monotonic()
    assert poll(lambda: timed_verify(verifier, mint.sign(rotated_key))[1] is None, timeout=10)
    assert time.monotonic() - published < 10

    hostile.keys = [rotated_key.public_jwk()]
    assert poll(lambda: status(verifier).kids == (rotated_key.kid,), timeout=15)
    reason = timed_verify(verifier, mint.sign(ec_key))[1]
    assert reason is not None and "kid unknown" in reason
    assert timed_verify(verifier, mint.sign(rotated_key))[1] is None


# --- size -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["oversized", "oversized-chunked"])
def test_an_oversized_jwks_is_refused_and_the_old_keys_keep_serving(
    make: MakeVerifier, hostile: HostileJwks, mint: TokenMinter, ec_key: SigningKey, mode: str
) -> None:
    """A 1 MiB JWKS (with or without Content-Length) is a failed refresh (limit 256 KiB)."""
    verifier = make(jwks_refresh_cooldown_seconds=0)
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    hostile.mode = mode
    timed_verify(verifier, mint.sign(ec_key, kid="trigger-a-refresh"))
    assert poll(lambda: status(verifier).failures >= 1)
    assert "larger than 262144 bytes" in (status(verifier).last_failure or "")
    assert status(verifier).kids is not None and ec_key.kid in status(verifier).kids
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None


def test_an_oversized_jwks_is_never_the_first_key_set(
    make: MakeVerifier, hostile: HostileJwks, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """With no key set yet, an oversized JWKS leaves the issuer without keys (401)."""
    hostile.mode = "oversized"
    verifier = make(jwks_max_bytes=4096)
    reason = timed_verify(verifier, mint.sign(ec_key))[1]
    assert reason is not None and "unreachable" in reason
    assert poll(lambda: status(verifier).failures >= 1)
    assert "larger than 4096 bytes" in (status(verifier).last_failure or "")


# --- the refresher's lifetime -----------------------------------------------------------------


def _refreshers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("jwks-refresh")]


def test_close_stops_the_refresher_threads(
    make: MakeVerifier, hostile: HostileJwks, mint: TokenMinter, ec_key: SigningKey
) -> None:
    """The refresher starts on first use and stops on close(); a closed verifier starts none."""
    before = set(_refreshers())
    verifier = make()
    assert timed_verify(verifier, mint.sign(ec_key))[1] is None
    mine = [t for t in _refreshers() if t not in before]
    assert len(mine) == 1
    verifier.close()
    assert not mine[0].is_alive()
    timed_verify(verifier, mint.sign(ec_key))
    assert [t for t in _refreshers() if t not in before] == []


# --- parsing ----------------------------------------------------------------------------------


def test_parse_keeps_signing_keys_by_kid_and_skips_unusable_members(
    ec_key: SigningKey, rsa_key: SigningKey
) -> None:
    """Members PyJWT cannot use, without kid, or for encryption are left out; a set of nothing
    usable is empty (refuses everything), while a body that is not a JWK Set is an error."""
    import json

    from cds_service.edge.jwks import JwksFetchError

    encryption = {**rsa_key.public_jwk(), "kid": "enc", "use": "enc"}
    no_kid = {k: v for k, v in ec_key.public_jwk().items() if k != "kid"}
    body = {"keys": [ec_key.public_jwk(), {"kty": "nonsense"}, "x", encryption, no_kid]}
    assert list(parse_jwk_set(json.dumps(body).encode())) == [ec_key.kid]
    assert parse_jwk_set(b'{"keys": [{"kty": "nonsense", "kid": "a"}]}') == {}
    for bad in (b"<html>", b"[]", b'{"keys": {}}', b"[" * 100_000):
        with pytest.raises(JwksFetchError):
            parse_jwk_set(bad)
