"""The one exception the app's views raise: a status and a sentence for the error page."""

from __future__ import annotations


class AppError(Exception):
    """Shown as a plain page with ``status``; ``message`` never carries PHI or a token."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
