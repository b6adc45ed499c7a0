"""Sessions and locks on three real server processes: every call through a follower (forwarded to
the leader: the write, the renewal, the lock-delay check), `kill -9` of the leader, and the new
leader's TTL timer invalidating the session 2 x TTL after its last renewal, releasing the lock,
with the lock-delay honoured before another session takes it (reference/coordination.md §1.5).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.harness import Agent, Cluster, http, wait_until

pytestmark = pytest.mark.timeout(150)


def call(server: Agent, method: str, path: str, body: object = None) -> tuple[int, object]:
    status, _, data = http(method, server.url + path, json.dumps(body) if body is not None else None, timeout=15)
    try:
        return status, json.loads(data) if data.strip() else None
    except ValueError:
        return status, data.decode()


@pytest.fixture
def cluster(tmp_path: Path):
    with Cluster(tmp_path, servers=3).start() as cluster:
        yield cluster.servers


def test_a_session_outlives_a_leader_kill_then_expires_on_the_new_leader(cluster):
    servers = cluster
    leader_addr = wait_until(lambda: servers[0].leader() if all(s.leader() == servers[0].leader() != ""
                                                                for s in servers) else None,
                             timeout=30, what="one leader known to all three servers")
    leader = next(s for s in servers if s.server_addr == leader_addr)
    followers = [s for s in servers if s is not leader]
    wait_until(lambda: all(call(f, "GET", "/v1/catalog/node/" + f.name)[0] == 200 for f in followers),
               timeout=30, what="the followers registered in the catalog")
    a, b = followers

    status, body = call(a, "PUT", "/v1/session/create",
                        {"node": a.name, "ttl": "10s", "lockdelay": "3s", "checks": [], "name": "holder"})
    assert status == 200, body
    holder = body["ID"]  # type: ignore[index]
    status, body = call(b, "PUT", "/v1/session/create", {"node": b.name, "checks": [], "name": "waiter"})
    waiter = body["ID"]  # type: ignore[index]
    assert call(b, "PUT", f"/v1/kv/svc/leader?acquire={holder}", "me") == (200, True)
    assert call(a, "PUT", f"/v1/kv/svc/leader?acquire={waiter}", "you") == (200, False)
    status, body = call(b, "PUT", f"/v1/session/renew/{holder}")
    assert status == 200 and body[0]["TTL"] == "10s"  # type: ignore[index]

    leader.stop(kill=True)
    new_leader = wait_until(lambda: a.leader() if a.leader() and a.leader() == b.leader() != leader_addr
                            else None, timeout=20, what="a new leader")
    assert new_leader != leader_addr
    wait_until(lambda: call(a, "PUT", f"/v1/session/renew/{holder}")[0] == 200, timeout=15,
               what="a renewal through the new leader")
    renewed = time.monotonic()

    # no more renewals: the new leader invalidates the session 2 x TTL after the last one
    def released() -> bool:
        status, body = call(b, "GET", "/v1/kv/svc/leader?consistent")
        return status == 200 and "Session" not in body[0]  # type: ignore[index]

    wait_until(released, timeout=35, interval=0.1, what="the lock released by the TTL expiry")
    elapsed = time.monotonic() - renewed
    assert 19 <= elapsed <= 32, elapsed
    assert call(a, "GET", f"/v1/session/info/{holder}") == (200, [])
    assert call(a, "PUT", f"/v1/kv/svc/leader?acquire={waiter}", "you") == (200, False)  # lock-delay (3 s)
    taken = wait_until(lambda: call(a, "PUT", f"/v1/kv/svc/leader?acquire={waiter}", "you")[1] is True or None,
                       timeout=10, interval=0.2, what="the lock taken after its lock-delay")
    assert taken and time.monotonic() - renewed - elapsed >= 2.5
    status, body = call(b, "GET", "/v1/kv/svc/leader")
    entry = body[0]  # type: ignore[index]
    assert (entry["Session"], entry["LockIndex"]) == (waiter, 2)
