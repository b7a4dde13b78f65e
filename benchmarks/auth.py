"""A CDS client's identity for the benchmark: an ES384 key, its JWK Set on loopback, and tokens.

Every hook call needs a token with its own ``jti`` (the replay guard refuses a second use), so
tokens are minted ahead of each load run and handed to the load generator in a file.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://ehr.bench.invalid"
KID = "bench-es384"
TOKEN_LIFETIME = 1800  # seconds; the verifier refuses lifetimes over an hour


class ClientIdentity:
    """The signing key of one CDS client and its public JWK Set."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        jwk.update(kid=KID, use="sig", alg="ES384")
        self.jwks = {"keys": [jwk]}

    def token(self, audience: str, now: float | None = None) -> str:
        issued = int(now or time.time())
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "iat": issued,
            "exp": issued + TOKEN_LIFETIME,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})

    def write_tokens(self, path: Path, audience: str, count: int) -> Path:
        """``count`` fresh tokens, one a line (what the wrk script reads)."""
        now = time.time()
        path.write_text("".join(self.token(audience, now) + "\n" for _ in range(count)))
        return path


class JwksServer:
    """The client's JWK Set on ``http://127.0.0.1:<port>/jwks.json`` (a thread, closed on exit)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        body = json.dumps(jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/jwks.json"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()
