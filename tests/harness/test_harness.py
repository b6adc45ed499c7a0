"""The harness itself, on real processes: two one-server datacenters joined over the WAN, a client
agent, KV through it, kill -9 and a restart from the data dir, and the leader lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Agent, Cluster, wait_until

pytestmark = pytest.mark.timeout(90)


def test_two_datacenters_a_client_kill_9_and_a_restart(tmp_path: Path) -> None:
    dc1 = Cluster(tmp_path, servers=1, clients=1, datacenter="dc1")
    dc2 = Cluster(tmp_path, servers=1, datacenter="dc2", prefix="dc2-")
    with dc1.start(), dc2.start():
        (server,), (client,) = dc1.servers, dc1.clients
        assert dc1.wait_leader() is server and dc2.wait_leader() is dc2.servers[0]
        assert server.wait_http() is server and client.wait_http() is client

        dc1.join_wan(dc2)  # the WAN pool: each datacenter's servers see the other's
        for agent in (server, client, dc2.servers[0]):  # a client asks a server: 500 until it knows one
            wait_until(lambda a=agent: _datacenters(a) == ["dc1", "dc2"], timeout=20,
                       what=f"both datacenters known to {agent.name}")
        assert {m["Name"] for m in server.read_json("/v1/agent/members?wan=1")} == {"s1.dc1", "dc2-s1.dc2"}

        wait_until(lambda: client.members() == {"s1": 1, "c1": 1}, timeout=20, what="the LAN pool")
        assert wait_until(lambda: client.kv_put("via/client", "yes"), timeout=20, what="a write via the client")
        assert server.kv_get("via/client", "&consistent") == b"yes"
        assert server.kv_get("via/client", "&dc=dc2") is None  # KV is per datacenter
        assert client.cli("kv", "get", "via/client").stdout == "yes\n"  # the CLI talks to this agent

        server.stop(kill=True)  # kill -9: the whole process group goes at once
        assert not server.alive()
        wait_until(lambda: client.leader() == "", timeout=20, what="the client losing its leader")
        server.start()  # back from its data dir
        assert dc1.wait_leader() is server
        assert wait_until(lambda: server.kv_get("via/client", "&consistent"), timeout=20) == b"yes"
        assert "agent running" in server.log(this_start=True).lower()
        assert server.log().lower().count("agent running") == 2  # both starts, one log


def _datacenters(agent: Agent) -> list[str] | None:
    status, body = agent.poll_json("/v1/catalog/datacenters")
    return sorted(body) if status == 200 else None
