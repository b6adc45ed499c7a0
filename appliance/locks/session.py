"""Sessions as Consul's Go client uses them for locks: create, renew periodically, destroy.

`create_session` sends only the fields that are set (the Go client builds the body from a map,
so an unset `LockDelay` leaves the server's default of 15 s). `Renewer` is `RenewPeriodic`:
renew every TTL/2; on an error retry every second until a whole TTL has passed without a
successful renewal, then give up; a 404 means the session is gone (`session expired`); when
stopped it destroys the session. The KV helpers read and write keys the way the Go client's
`KV` does (a single key GET answers a list of one, a 404 is "no key").
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

from appliance.config.durations import parse_duration
from appliance.watches.client import AgentClient, ApiFailure, Unreachable
from appliance.watches.plan import quote

log = logging.getLogger("cairn.lock")

DEFAULT_TTL = "15s"
WAIT_MS = 15000  # the Go client's lock and semaphore wait time, sent as ?wait=15000ms


class LockError(Exception):
    """A lock or semaphore failure; the message is the Go client's."""


def kv_path(key: str) -> str:
    return "/v1/kv/" + quote(key.lstrip("/"), safe="/")


def go_path_join(*parts: str) -> str:
    """Go's path.Join for the simple cases locks use: non-empty parts joined by one slash."""
    joined = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return joined


def value_bytes(entry: dict[str, Any] | None) -> bytes | None:
    if entry is None or entry.get("Value") is None:
        return None
    return base64.b64decode(entry["Value"])


async def create_session(api: AgentClient, name: str, ttl: str = DEFAULT_TTL, behavior: str = "") -> str:
    body: dict[str, str] = {}
    if behavior:
        body["Behavior"] = behavior
    if name:
        body["Name"] = name
    if ttl:
        body["TTL"] = ttl
    try:
        reply = (await api.put("/v1/session/create", body=json.dumps(body).encode())).ok()
        return str(reply.json()["ID"])
    except (Unreachable, ApiFailure, ValueError, KeyError, TypeError) as err:
        raise LockError(f"failed to create session: {err}") from None


async def destroy_session(api: AgentClient, session: str) -> None:
    try:
        await api.put("/v1/session/destroy/" + quote(session))
    except Unreachable as err:
        log.debug("destroying session %s: %s", session, err)


class Renewer:
    """RenewPeriodic as a task: `start()`, then `await stop()` (destroys the session)."""

    def __init__(self, api: AgentClient, session: str, ttl: str = DEFAULT_TTL) -> None:
        self.api, self.session, self.ttl_s = api, session, parse_duration(ttl)
        self.error: str = ""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="session-renew")

    async def _run(self) -> None:
        wait, ttl, last = self.ttl_s / 2, self.ttl_s, time.monotonic()
        while True:
            if time.monotonic() - last > ttl:
                return  # gave up: the last error is in self.error
            await asyncio.sleep(wait)
            try:
                reply = await self.api.put("/v1/session/renew/" + quote(self.session))
                if reply.status == 404:
                    self.error = "session expired"
                    return
                entries = reply.ok().json() or []
            except (Unreachable, ApiFailure) as err:
                self.error, wait = str(err), 1.0
                continue
            if entries and entries[0].get("TTL"):
                ttl = parse_duration(entries[0]["TTL"])  # the server may change the TTL
            wait, last = ttl / 2, time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await destroy_session(self.api, self.session)


async def kv_get(api: AgentClient, key: str, params: list[tuple[str, str]] | None = None,
                 timeout_s: float = 60.0) -> tuple[dict[str, Any] | None, int]:
    """(entry or None, X-Consul-Index) of one key."""
    reply = await api.get(kv_path(key), params or [], timeout_s=timeout_s)
    if reply.status == 404:
        return None, reply.index
    entries = reply.ok().json() or []
    return (entries[0] if entries else None), reply.index


async def kv_list(api: AgentClient, prefix: str, params: list[tuple[str, str]] | None = None,
                  timeout_s: float = 60.0) -> tuple[list[dict[str, Any]], int]:
    reply = await api.get(kv_path(prefix), [("recurse", ""), *(params or [])], timeout_s=timeout_s)
    if reply.status == 404:
        return [], reply.index
    return list(reply.ok().json() or []), reply.index


async def kv_put(api: AgentClient, key: str, params: list[tuple[str, str]], body: bytes | None) -> bool:
    reply = (await api.put(kv_path(key), params, body or b"")).ok()
    return reply.json() is True


def blocking_params(index: int, wait_s: float | None, consistent: bool = False) -> list[tuple[str, str]]:
    """The Go client's query options: `consistent`, `index` when set, `wait` in milliseconds."""
    params = [("consistent", "")] if consistent else []
    if index:
        params.append(("index", str(index)))
    if wait_s is not None:
        params.append(("wait", f"{max(int(wait_s * 1000), 0)}ms"))
    return params


def retryable(err: Exception) -> bool:
    """The Go client's IsRetryableError: a network error or a 500."""
    return isinstance(err, Unreachable) or (isinstance(err, ApiFailure) and err.status == 500)


async def delete_cas(api: AgentClient, key: str, pair: dict[str, Any], what: str) -> bool:
    """DELETE ?cas=<ModifyIndex>: False when the key changed since it was read."""
    try:
        reply = (await api.delete(kv_path(key), [("cas", str(pair.get("ModifyIndex", 0)))])).ok()
    except (Unreachable, ApiFailure) as err:
        raise LockError(f"{what}: {err}") from None
    return reply.json() is True
