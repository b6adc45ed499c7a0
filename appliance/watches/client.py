"""A small asyncio client of an agent's HTTP API, for watches and locks.

Watches (`cairn watch`, the agent's `watches` block) and `cairn lock` hold blocking queries
open while other work goes on (a handler, a child process, session renewals), so they talk to
the agent with aiohttp rather than the command line's synchronous client. One `AgentClient` is
one aiohttp session (keep-alive connections) with the address, token and datacenter of the
caller (`dc=` added to each request when a datacenter is set); every request returns the
status, the index and the body, and only a connection failure raises (`Unreachable`, with Go's
wording where there is one).
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

# A blocking query may wait up to 10 minutes on the server (plus its jitter); give it room.
BLOCKING_TIMEOUT_S = 11 * 60.0
REQUEST_TIMEOUT_S = 60.0


class Unreachable(Exception):
    """The agent did not answer (refused, reset, timed out)."""


class ApiFailure(Exception):
    """An answer with an error status where the caller needed a success."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Unexpected response code: {status} ({body})")
        self.status = status
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.status >= 500


@dataclass(frozen=True)
class Reply:
    status: int
    index: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace").strip()

    def ok(self) -> Reply:
        """Self for a 2xx answer; ApiFailure otherwise."""
        if not 200 <= self.status < 300:
            raise ApiFailure(self.status, self.text())
        return self


def _index(headers: Any) -> int:
    try:
        return int(headers.get("X-Consul-Index", "0") or 0)
    except ValueError:
        return 0


class AgentClient:
    """`async with AgentClient(base_url, token=...) as api:` then `await api.request(...)`."""

    def __init__(self, base_url: str, *, token: str = "", datacenter: str = "", verify_tls: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.datacenter = datacenter  # `dc=` on every request that does not name one
        self._ssl: ssl.SSLContext | bool = True
        if not verify_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self._ssl = ctx
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                headers={"User-Agent": "cairn"},
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, params: Any = (), body: bytes | None = None, *,
                      token: str = "", timeout_s: float = REQUEST_TIMEOUT_S) -> Reply:
        headers = {}
        if token or self.token:
            headers["X-Consul-Token"] = token or self.token
        url = self.base_url + path
        query = list(params)
        if self.datacenter and not any(name == "dc" for name, _ in query):
            query.append(("dc", self.datacenter))
        try:
            async with self._get_session().request(
                method, url, params=query, data=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                data = await resp.read()
                return Reply(resp.status, _index(resp.headers), data)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise Unreachable(f'{method.capitalize()} "{url}": {_reason(err)}') from None

    async def get(self, path: str, params: Any = (), **kw: Any) -> Reply:
        return await self.request("GET", path, params, **kw)

    async def put(self, path: str, params: Any = (), body: bytes | None = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, params, b"" if body is None else body, **kw)

    async def delete(self, path: str, params: Any = (), **kw: Any) -> Reply:
        return await self.request("DELETE", path, params, **kw)


def _reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "context deadline exceeded"
    if isinstance(err, aiohttp.ClientConnectorError):
        inner = err.os_error
        return f"dial tcp {err.host}:{err.port}: connect: {(inner.strerror or str(inner)).lower()}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "EOF"
    return str(err) or type(err).__name__
