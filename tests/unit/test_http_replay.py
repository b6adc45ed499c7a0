"""The HTTP fast path (appliance/http/replay.py) against the full way, over real sockets.

One in-process agent (a real Store and one-voter Raft, tests/unit/http_inprocess.py) is served by
two HTTP servers on 127.0.0.1: one answering repeated reads from their recorded answer, one with
that turned off. Every request goes to both, several times, and the answers must be the same
bytes (status line, every header but Date, in order, and the body); the server's count of
replayed answers says which requests took the fast path, so a fast path that never runs fails too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from appliance.http.app import HTTPServer
from appliance.http.authz import FILTERED
from appliance.raft.driver import RaftDriver
from tests.unit.http_inprocess import InProcessAgent, http_agent

pytestmark = pytest.mark.timeout(60)

ROOT = "root-secret"
HCL = f'acl {{ enabled = true default_policy = "deny" tokens {{ initial_management = "{ROOT}" }} }}'
Reply = tuple[bytes, list[tuple[bytes, bytes]], bytes]  # status line, headers but Date, body


class Client:
    """An HTTP/1.1 connection that reads whole answers (Content-Length framed), opened again
    when the server closed the last one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, target: str, headers: dict[str, str] | None = None, method: str = "GET",
                   version: str = "1.1") -> Reply:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, *fields = head[:-4].split(b"\r\n")
        pairs = [(name, value) for name, _, value in (f.partition(b": ") for f in fields)]
        found = dict(pairs)
        length = found.get(b"Content-Length")
        body = b""
        if method != "HEAD" and length is not None:
            body = await self.reader.readexactly(int(length))
        assert sum(1 for name, _ in pairs if name == b"Date") == 1, head
        if found.get(b"Connection") == b"close" or (version == "1.0" and found.get(b"Connection") != b"keep-alive"):
            await self.close()
        return status, [p for p in pairs if p[0] != b"Date"], body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None


@asynccontextmanager
async def servers(api: InProcessAgent) -> AsyncIterator[tuple[HTTPServer, Client, Client]]:
    """(the server with the fast path, a client of it, a client of the server without it)."""
    fast, full = HTTPServer(api.ctx), HTTPServer(api.ctx, replay=False)
    clients = []
    try:
        for server in (fast, full):
            await server._listen(["127.0.0.1"], 0)
            clients.append(Client(server.servers[0].sockets[0].getsockname()[1]))
        yield fast, clients[0], clients[1]
    finally:
        for client in clients:
            await client.close()
        for server in (fast, full):
            await server._shutdown()


async def same(fast: HTTPServer, a: Client, b: Client, target: str, replayed: int,
               headers: dict[str, str] | None = None, method: str = "GET", version: str = "1.1") -> Reply:
    """Ask the server with the fast path three times and the one without it once (after the
    first, so that the fast one meets a change first): the answers must be the same, and
    `replayed` of the three answered by the fast path (2: the first was recorded, the next two
    replayed; 0: none may be)."""
    before = fast.replays.answered
    first = await a.send(target, headers, method, version)
    want = await b.send(target, headers, method, version)
    assert first == want, (target, first, want)
    for _ in range(2):
        got = await a.send(target, headers, method, version)
        assert got == want, (target, got, want)
    assert fast.replays.answered - before == replayed, target
    return want


async def register(api: InProcessAgent, node: str, status: str = "passing", token: str = ROOT) -> None:
    a = await api.call("PUT", "/v1/catalog/register", {
        "Node": node, "Address": "10.0.0.9", "NodeMeta": {"rack": node[-1]},
        "Service": {"ID": f"web-{node}", "Service": "web", "Port": 80, "Tags": ["v1", node]},
        "Check": {"CheckID": f"c-{node}", "Name": "c", "Status": status, "ServiceID": f"web-{node}"}},
        headers={"X-Consul-Token": token})
    assert a.status == 200, a.body


REPLAYED = [
    "/v1/health/service/web", "/v1/health/service/web?passing", "/v1/health/service/web?passing=1",
    "/v1/health/service/web?pretty", "/v1/health/service/web?stale", "/v1/health/service/web?consistent",
    "/v1/health/service/web?cached", "/v1/health/service/web?tag=v1&tag=a", "/v1/health/service/web?dc=dc1",
    "/v1/health/service/web?filter=Service.Port%20%3D%3D%2080", "/v1/health/service/web?node-meta=rack:a",
    "/v1/health/service/web?max_stale=1h", "/v1/health/service/web?wait=1s",
    "/v1/health/service/nothing", "/v1/health/service/web?peer=x", "/v1/health/connect/web",
    "/v1/health/checks/web", "/v1/health/node/a", "/v1/health/state/any", "/v1/health/state/passing?stale",
    "/v1/catalog/services", "/v1/catalog/service/web?tag=v1", "/v1/catalog/nodes", "/v1/catalog/node/a",
    "/v1/catalog/node-services/a", "/v1/catalog/gateway-services/gw", "/v1/health/service/web?x=1&passing",
    "/v1/kv/?keys", "/v1/kv/app/?keys&separator=/", "/v1/kv/app/?recurse", "/v1/kv/?recurse&pretty",
]
FULL_WAY = [
    "/v1/health/service/web?index=1", "/v1/health/service/web?index=", "/v1/health/service/web?near=_agent",
    "/v1/health/ingress/web",
    "/v1/health/service/web?filter=bad%20%3D", "/v1/health/service/web?stale&consistent",
    "/v1/health/service/web?cached&consistent", "/v1/health/service/web?passing=maybe",
    "/v1/health/service/web?index=x", "/v1/health/service/web?dc=elsewhere", "/v1/nothing/here",
    "/v1/agent/services", "/v1/kv/missing", "/v1/kv/app/a", "/v1/kv/app/a?raw", "/v1/kv/none/?recurse",
    "/v1/status/leader", "/",
    "/v1/health/service/web?x=" + "a" * 1100,  # too long to remember
]


def test_answers_are_the_same_bytes_as_the_full_way() -> None:
    async def go() -> None:
        async with http_agent() as api, servers(api) as (fast, a, b):
            for node in ("a", "b"):
                await register(api, node)
            await register(api, "c", status="critical")
            for key in ("app/a", "app/b/c", "top"):
                assert (await api.call("PUT", f"/v1/kv/{key}", b"v")).status == 200
            for target in REPLAYED:
                await same(fast, a, b, target, 2)
            for target in FULL_WAY:
                await same(fast, a, b, target, 0)
            # not a kept-alive HTTP/1.1 GET: the full way, the same answer
            await same(fast, a, b, "/v1/health/service/web", 0, method="HEAD")
            await same(fast, a, b, "/v1/health/service/web", 0, version="1.0")
            await same(fast, a, b, "/v1/health/service/web", 0, {"Connection": "keep-alive"}, version="1.0")
            status, headers, body = await same(fast, a, b, "/v1/health/service/web?passing", 3)  # asked before
            assert status == b"HTTP/1.1 200 OK" and len(json.loads(body)) == 2
            assert dict(headers)[b"X-Consul-Query-Backend"] == b"blocking-query"
    asyncio.run(go())


def test_a_change_is_answered_at_once_and_a_blocking_query_still_blocks() -> None:
    async def go() -> None:
        async with http_agent() as api, servers(api) as (fast, a, b):
            await register(api, "a")
            target = "/v1/health/service/web?passing"
            _, headers, body = await same(fast, a, b, target, 2)
            index = int(dict(headers)[b"X-Consul-Index"])
            await register(api, "b")  # the index moves: recorded again, then replayed
            _, headers, body2 = await same(fast, a, b, target, 2)
            assert len(json.loads(body2)) == 2 and int(dict(headers)[b"X-Consul-Index"]) > index
            await register(api, "b", status="critical")
            _, _, body3 = await same(fast, a, b, target, 2)
            assert len(json.loads(body3)) == 1

            # the render cache drops the entry (same index): the full way renders it again
            api.ctx.render_cache.entries.clear()
            before = fast.replays.answered
            assert await a.send(target) == await b.send(target)
            assert fast.replays.answered == before
            await same(fast, a, b, target, 3)

            # a blocking query on the same path waits for the next change
            _, headers, _ = await a.send(target)
            index = int(dict(headers)[b"X-Consul-Index"])
            parked = asyncio.ensure_future(a.send(f"{target}&index={index}&wait=5s"))
            await asyncio.sleep(0.2)
            assert not parked.done()
            started = time.monotonic()
            await register(api, "c")
            _, headers, body = await asyncio.wait_for(parked, 5)
            assert time.monotonic() - started < 2 and int(dict(headers)[b"X-Consul-Index"]) > index
            assert len(json.loads(body)) == 2
    asyncio.run(go())


def test_the_read_point_is_waited_for_each_time() -> None:
    """A replayed `?consistent` read still makes its read-index round; a failed one is the 500
    the full way answers."""
    async def go() -> None:
        async with http_agent() as api, servers(api) as (fast, a, b):
            await register(api, "a")
            asked: list[str] = []
            read_point = api.raft.read_point
            failing = False

            async def counted(consistency: str) -> None:
                asked.append(consistency)
                if failing:
                    from appliance.raft.messages import NotLeader
                    raise NotLeader("")
                await read_point(consistency)

            api.raft.read_point = counted  # type: ignore[method-assign]
            await same(fast, a, b, "/v1/health/service/web?consistent", 2)
            assert asked == ["consistent"] * 4
            failing = True
            status, _, body = await same(fast, a, b, "/v1/health/service/web?consistent", 3)
            assert (status, body) == (b"HTTP/1.1 500 Internal Server Error", b"No cluster leader")
    asyncio.run(go())


def test_the_headers_that_change_are_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale read's X-Consul-LastContact is the current one; a change of X-Consul-KnownLeader
    is answered the full way (and recorded again)."""
    contact, known = [1234], [True]
    monkeypatch.setattr(RaftDriver, "last_contact_ms", property(lambda self: contact[0]))
    monkeypatch.setattr(RaftDriver, "known_leader", property(lambda self: known[0]))

    async def go() -> None:
        async with http_agent() as api, servers(api) as (fast, a, b):
            await register(api, "a")
            for target in ("/v1/health/service/web?stale", "/v1/catalog/nodes?stale&pretty"):
                _, headers, _ = await same(fast, a, b, target, 2)
                assert dict(headers)[b"X-Consul-LastContact"] == b"1234"
                contact[0] = 98765
                _, headers, _ = await same(fast, a, b, target, 3)
                assert dict(headers)[b"X-Consul-LastContact"] == b"98765"
                known[0] = False
                _, headers, _ = await same(fast, a, b, target, 2)
                assert dict(headers)[b"X-Consul-KnownLeader"] == b"false"
                contact[0], known[0] = 1234, True
    asyncio.run(go())


async def make_token(api: InProcessAgent, name: str, rules: str) -> str:
    await api.ctx.consensus.propose({"Type": "acl", "Op": "policy_set", "Object": {
        "ID": f"{name}-0000-4000-8000-000000000000", "Name": name, "Description": "", "Rules": rules}})
    tok: dict[str, Any] = {"AccessorID": f"{name}-acc", "SecretID": f"{name}-secret", "Description": "",
                           "Local": False, "CreateTime": "2024-05-01T11:00:00Z",
                           "Policies": [{"ID": f"{name}-0000-4000-8000-000000000000"}]}
    await api.ctx.consensus.propose({"Type": "acl", "Op": "token_set", "Object": tok, "Create": True})
    return tok["SecretID"]


def test_acl_tokens_are_checked_on_every_replayed_answer() -> None:
    async def go() -> None:
        async with http_agent("-hcl", HCL) as api, servers(api) as (fast, a, b):
            for node in ("a", "b"):
                await register(api, node)
            everything = await make_token(api, "all", 'service_prefix "" { policy = "read" }\n'
                                                      'node_prefix "" { policy = "read" }')
            some = await make_token(api, "some", 'service_prefix "" { policy = "read" }\n'
                                                  'node "a" { policy = "read" }')
            target = "/v1/health/service/web?passing"
            await same(fast, a, b, target, 2, {"X-Consul-Token": everything})
            # recorded with the other token; the first with this one resolves it (the full way)
            await same(fast, a, b, target, 2, {"X-Consul-Token": ROOT})
            _, headers, body = await same(fast, a, b, target, 0, {"X-Consul-Token": some})
            assert dict(headers)[FILTERED.encode()] == b"true" and len(json.loads(body)) == 1
            status, _, body = await same(fast, a, b, target, 0)  # anonymous: reads nothing
            assert status == b"HTTP/1.1 200 OK" and json.loads(body) == []
            status, _, body = await same(fast, a, b, target, 0, {"X-Consul-Token": "nope"})
            assert (status, body) == (b"HTTP/1.1 403 Forbidden", b"ACL not found")
            status, _, _ = await same(fast, a, b, f"{target}&token={everything}", 2)
            assert status == b"HTTP/1.1 200 OK"
            await same(fast, a, b, target, 3, {"Authorization": f"Bearer {everything}"})  # the same token
            # the header comes before `?token`: this one is not found
            status, _, body = await same(fast, a, b, f"{target}&token={everything}", 0, {"X-Consul-Token": "nope"})
            assert (status, body) == (b"HTTP/1.1 403 Forbidden", b"ACL not found")
            status, _, body = await same(fast, a, b, f"{target}&token={some}", 0, {"Authorization": "Bearer x"})
            assert (status, body) == (b"HTTP/1.1 403 Forbidden", b"ACL not found")

            # the token is deleted: the next request is refused, not answered from the replay
            await api.ctx.consensus.propose({"Type": "acl", "Op": "token_delete", "ID": "all-acc"})
            status, _, body = await same(fast, a, b, target, 0, {"X-Consul-Token": everything})
            assert (status, body) == (b"HTTP/1.1 403 Forbidden", b"ACL not found")
            await same(fast, a, b, target, 2, {"X-Consul-Token": ROOT})

            # a KV listing is checked against the keys it names (`passes` never settles it): the
            # full way, for the management token as for one that reads part of it
            for key in ("pub/a", "priv/b"):
                assert (await api.call("PUT", f"/v1/kv/{key}", b"1", headers={"X-Consul-Token": ROOT})).status == 200
            pub = await make_token(api, "pub", 'key_prefix "pub/" { policy = "read" }')
            await same(fast, a, b, "/v1/kv/?recurse", 0, {"X-Consul-Token": ROOT})
            _, _, body = await same(fast, a, b, "/v1/kv/?recurse", 0, {"X-Consul-Token": pub})
            assert [e["Key"] for e in json.loads(body)] == ["pub/a"]
    asyncio.run(go())
