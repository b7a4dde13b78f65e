"""Latency of JWT verification while the issuer's JWKS endpoint is hostile (issue 11, item 3).

    .venv/bin/python benchmarks/jwks_attack.py

Runs the verifier in-process against a loopback JWKS server (``tests/edge/hostile_jwks.py``).
Attacks: black hole (accepts, never answers) and dribble (one byte every 0.5 s), starting when the
cached key set is due for a refresh (the policy's interval is cut to 1 s to get there quickly):
latency of 12 concurrent requests with a *known* kid and of one with an *unknown* kid (a request
still waiting after ``--limit`` seconds is reported as such).  Flood: tokens with random kids, 12
at a time for ``--flood-seconds``, against a healthy JWKS and one answering 500 (default policy,
and with the refresh interval cut to 1 s so that the cached set has expired): JWKS fetches caused.
Only the public ``JwtPolicy`` / ``JwtVerifier`` API is used, so older versions can be measured
too (put their package first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "edge"))
from hostile_jwks import HostileJwks

from cds_service.edge.jwt_auth import AuthenticationError, JwtPolicy, JwtVerifier
from cds_service.edge.replay_guard import SqlReplayGuard

ISSUER = "https://ehr.example.org"
AUDIENCE = "https://cds.example.org/cds-services/x"


def token(key: Any, kid: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="ES384", headers={"kid": kid})


def verify(verifier: JwtVerifier, tok: str) -> bool:
    try:
        verifier.verify(f"Bearer {tok}", AUDIENCE)
        return True
    except AuthenticationError:
        return False


def timed(verifier: JwtVerifier, tokens: list[str], limit: float) -> list[float | None]:
    """Verify each token in its own thread; seconds each took, None if still waiting at limit."""
    results: list[float | None] = [None] * len(tokens)

    def one(i: int) -> None:
        started = time.monotonic()
        verify(verifier, tokens[i])
        results[i] = time.monotonic() - started

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    end = time.monotonic() + limit
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return results


def show(label: str, results: list[float | None], limit: float) -> None:
    done = sorted(r for r in results if r is not None)
    waiting = len(results) - len(done)
    worst = f"> {limit:.0f} s (still waiting)" if waiting else f"{done[-1]:.3f} s"
    median = f"{done[len(done) // 2]:.3f} s" if done else "-"
    print(f"  {label}: n={len(results)} median {median}, worst {worst}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=float, default=30.0, help="give up waiting after (s)")
    parser.add_argument("--flood-seconds", type=float, default=25.0, help="flood duration (s)")
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True) | {"kid": "k1", "alg": "ES384"}
    with tempfile.TemporaryDirectory() as tmp:
        engine = sa.create_engine(f"sqlite:///{tmp}/replay.sqlite3")
        guard = SqlReplayGuard(engine)
        for attack in ("serve", "blackhole", "dribble"):
            with HostileJwks() as server:
                server.keys = [jwk]
                verifier = JwtVerifier(
                    JwtPolicy(issuers={ISSUER: server.url}, jwks_cache_seconds=1.0), guard
                )
                assert verify(verifier, token(key, "k1"))
                server.mode = attack
                time.sleep(1.2)  # the cached key set is now due for a refresh
                print("no attack:" if attack == "serve" else f"{attack}:", flush=True)
                known = [token(key, "k1") for _ in range(12)]
                show("known kid, 12 concurrent", timed(verifier, known, args.limit), args.limit)
                unknown = [token(key, "unknown-kid")]
                show("unknown kid", timed(verifier, unknown, args.limit), args.limit)
                close = getattr(verifier, "close", None)
                if close is not None:
                    close()
        for mode, interval in (("serve", 300.0), ("error", 300.0), ("error", 1.0)):
            with HostileJwks() as server:
                server.keys = [jwk]
                policy = JwtPolicy(issuers={ISSUER: server.url}, jwks_cache_seconds=interval)
                verifier = JwtVerifier(policy, guard)
                assert verify(verifier, token(key, "k1"))
                server.mode = mode
                time.sleep(1.2 if interval < 1.2 else 0)
                fetches_before, sent, worst = server.requests, 0, 0.0
                started = time.monotonic()
                while time.monotonic() - started < args.flood_seconds:
                    batch = [token(key, f"random-{sent + n}") for n in range(12)]
                    results = timed(verifier, batch, args.limit)
                    worst = max([worst, *(r if r is not None else args.limit for r in results)])
                    sent += len(batch)
                state = "healthy" if mode == "serve" else "answering 500"
                state += f", refresh interval {interval:g} s"
                print(
                    f"flood of unknown kids, JWKS {state}: {sent} tokens in "
                    f"{time.monotonic() - started:.1f} s caused "
                    f"{server.requests - fetches_before} JWKS fetches (worst {worst:.3f} s)",
                    flush=True,
                )
                close = getattr(verifier, "close", None)
                if close is not None:
                    close()
        engine.dispose()
    os._exit(0)  # threads of an old verifier may still hang on the dribble


if __name__ == "__main__":
    main()
