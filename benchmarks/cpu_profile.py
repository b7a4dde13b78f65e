"""CPU per patient-view call in-process, and where it goes (issue 14 item 4).

Builds the app with ``create_app(settings)`` and posts the typical 50-resource body through
the Flask test client, auth off and auth on (a fresh ES384 token per call, the JWKS on a
loopback thread), then prints microseconds per call and, with ``--profile``, cProfile's top
entries by own time. ``python -m benchmarks.cpu_profile [--calls N] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

from flask import Flask

from benchmarks import bundles
from benchmarks.auth import ISSUER, ClientIdentity, JwksServer
from benchmarks.bundles import SERVICE_ID, encode
from cds_service import create_app
from cds_service.config import DEFAULT_CONTENT_DIR, Settings

PUBLIC_URL = "https://cds.bench.invalid"
TYPICAL = 50  # resources, as in benchmarks.tail


def _settings(tmp: Path, auth: bool, jwks_url: str) -> Settings:
    return Settings(
        environment="test",
        database_url=f"sqlite:///{tmp / ('auth.sqlite3' if auth else 'open.sqlite3')}",
        content_dir=DEFAULT_CONTENT_DIR,
        auth=auth,
        public_url=PUBLIC_URL,
        jwt_issuers={ISSUER: jwks_url},
        log_level="INFO",
    )


def _measure(
    app: Flask, body: bytes, tokens: list[str], calls: int, profile: bool, top: int
) -> None:
    """Post ``body`` ``calls`` times (after 50 warm-up calls); print µs per call and the profile."""
    client = app.test_client()
    url = f"/cds-services/{SERVICE_ID}"

    def call(index: int) -> None:
        headers = {"Content-Type": "application/json"}
        if tokens:
            headers["Authorization"] = f"Bearer {tokens[index]}"
        response = client.post(url, data=body, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {response.get_data()[:300]!r}")

    for index in range(50):  # warm-up: JWKS fetch, caches
        call(calls + index)
    profiler = cProfile.Profile() if profile else None
    started_cpu = time.process_time()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for index in range(calls):
        call(index)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - started_cpu
    wall = time.perf_counter() - started
    label = "auth on " if tokens else "auth off"
    print(
        f"{label}: {cpu / calls * 1e6:.0f} µs CPU per call, "
        f"{wall / calls * 1e6:.0f} µs wall ({calls} calls{', profiled' if profile else ''})"
    )
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        print(out.getvalue())


def run(calls: int, profile: bool, top: int) -> None:
    """Time ``calls`` hook calls auth off and on; with ``profile`` print the top entries."""
    body = encode(bundles.patient_request(TYPICAL))
    identity = ClientIdentity()
    audience = f"{PUBLIC_URL}/cds-services/{SERVICE_ID}"
    with (
        tempfile.TemporaryDirectory(prefix="footdrop-cpu-") as name,
        JwksServer(identity.jwks) as jwks,
    ):
        for auth in (False, True):
            app = create_app(_settings(Path(name), auth, jwks.url))
            tokens = [identity.token(audience) for _ in range(calls + 50)] if auth else []
            try:
                _measure(app, body, tokens, calls, profile, top)
            finally:
                app.extensions["cds_runtime"].close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    run(args.calls, args.profile, args.top)


if __name__ == "__main__":
    main()
