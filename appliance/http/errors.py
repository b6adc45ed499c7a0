"""Errors an HTTP handler raises; the middleware turns them into Consul's status and plain text."""

from __future__ import annotations


class HTTPError(Exception):
    """An answer other than 200: Consul's status code and its plain-text body."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


def bad_request(text: str) -> HTTPError:
    return HTTPError(400, text)


def not_found(text: str = "") -> HTTPError:
    return HTTPError(404, text)
