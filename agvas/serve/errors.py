"""The one exception type the API turns into a JSON error: an HTTP status and a message for people."""

from __future__ import annotations


class ApiError(Exception):
    """A refused or failed request; `status` is the HTTP status the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
