"""The proxy's side of the agent's HTTP API: plain requests and blocking watches (aiohttp).

A watch repeats a blocking GET with `?index=` (or `?hash=` for `/v1/agent/service/<id>`) and
calls back with each new answer; a failed request is retried after a pause that doubles up to
5 s, so a proxy started before its agent (or during a restart) comes up when the agent does.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("proxy")


class AgentError(Exception):
    """A request the agent answered with an error status, or could not be made."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status} {text}" if status else text)
        self.status = status


class AgentAPI:
    def __init__(self, base_url: str, token: str = "", tls: ssl.SSLContext | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-Consul-Token": token} if token else {}
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AgentAPI:
        connector = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else False, limit=0)
        self._session = aiohttp.ClientSession(connector=connector, headers=self.headers,
                                              timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, params: dict[str, str] | None = None,
                      body: Any = None, timeout: float = 30.0) -> tuple[Any, dict[str, str]]:
        """(decoded JSON body, headers); AgentError on a failure or an error status."""
        assert self._session is not None, "use `async with AgentAPI(...)`"
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.request(method, self.base_url + path, params=params, data=data,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise AgentError(resp.status, raw.decode(errors="replace").strip())
                return (orjson.loads(raw) if raw else None), dict(resp.headers)
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError) as err:
            raise AgentError(0, f"{type(err).__name__}: {err}") from None

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        body, _ = await self.request("GET", path, params)
        return body

    async def watch(self, path: str, on_change: Callable[[Any], Awaitable[None]], *,
                    params: dict[str, str] | None = None, by_hash: bool = False, wait_s: int = 60) -> None:
        """Call `on_change` with the first answer and with every different one after; runs until cancelled."""
        index, pause = "", 0.25
        while True:
            query = dict(params or {})
            if index:
                query["hash" if by_hash else "index"] = index
                query["wait"] = f"{wait_s}s"
            try:
                body, headers = await self.request("GET", path, query, timeout=wait_s * 1.2 + 10)
            except AgentError as err:
                log.debug("watch %s: %s", path, err)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            pause = 0.25
            new = headers.get("X-Consul-ContentHash" if by_hash else "X-Consul-Index", "")
            if not new or new != index:
                index = new
                await on_change(body)
            if not new:
                await asyncio.sleep(1.0)  # an answer without an index cannot block: poll
