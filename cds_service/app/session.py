"""The app's session: an encrypted, signed cookie (Fernet) that expires; tokens never leave it.

The cookie holds the access token, the patient and the granted scopes. Fernet encrypts (AES-CBC)
and signs (HMAC-SHA256) it and carries its issue time, so an old cookie is refused by ``ttl``
without any server-side store: every gunicorn worker reads any worker's cookie, given the same
secret (``CDS_APP_SECRET``, or in development a random key written once to ``var/app-secret``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["SessionBox", "SessionError", "development_secret"]


class SessionError(Exception):
    """The cookie is missing, forged, or older than its lifetime (``reason``: missing|invalid)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SessionBox:
    """Seals and opens JSON values; each purpose (launch, session) derives its own key."""

    def __init__(self, secret: str, purpose: str) -> None:
        digest = hashlib.sha256(f"footdrop-cds app {purpose}\0{secret}".encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, value: dict[str, Any], at: int | None = None) -> str:
        """Encrypt and sign ``value``; ``at`` (Unix time) backdates it, for tests of expiry."""
        data = json.dumps(value, separators=(",", ":")).encode()
        if at is not None:
            return self._fernet.encrypt_at_time(data, at).decode()
        return self._fernet.encrypt(data).decode()

    def open(self, sealed: str | None, max_age_seconds: int) -> dict[str, Any]:
        """The value, or :class:`SessionError` when absent, tampered with or expired."""
        if not sealed:
            raise SessionError("missing")
        try:
            raw = self._fernet.decrypt(sealed.encode(), ttl=max_age_seconds)
        except (InvalidToken, ValueError):
            raise SessionError("invalid") from None
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise SessionError("invalid")
        return value


def development_secret(directory: Path) -> str:
    """A random secret kept in ``directory/app-secret``: created once, then shared by all workers.

    The file is written under a temporary name and linked into place, so a worker never reads a
    half-written secret, and two workers racing keep the first one's.
    """
    path = directory / "app-secret"
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text("ascii").strip()
        if len(text) >= 32:
            return text
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / f".app-secret-{os.getpid()}-{secrets.token_hex(4)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secrets.token_urlsafe(48))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    return path.read_text("ascii").strip()
