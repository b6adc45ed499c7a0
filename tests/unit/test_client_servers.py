"""How a client agent picks its server (appliance/client/servers.py), how the replica stream is cut
into frames (appliance/rpc/feed.py) and how often anti-entropy runs (appliance/local/sync.py
scale_factor), with seeded randomness."""

from __future__ import annotations

import random

import pytest

from appliance.client.servers import BACKOFF_MAX_S, ServerList, server_address, with_port
from appliance.gossip.serf import Member, MemberStatus
from appliance.local.sync import scale_factor


def member(name: str, addr: str, *, role: str = "consul", dc: str = "dc1", port: str = "8300",
           status: MemberStatus = MemberStatus.ALIVE) -> Member:
    tags = {"role": role, "dc": dc}
    if port:
        tags["port"] = port
    return Member(name, addr, 8301, tags, status)


def test_only_alive_servers_of_this_datacenter_count():
    # Consul's router: role=consul, same dc, RPC port from the `port` tag
    assert server_address(member("s1", "10.0.0.1"), "dc1") == "10.0.0.1:8300"
    assert server_address(member("s1", "fd00::1", port="9300"), "dc1") == "[fd00::1]:9300"
    assert server_address(member("c1", "10.0.0.2", role="node"), "dc1") == ""
    assert server_address(member("s2", "10.0.0.3", dc="dc2"), "dc1") == ""
    assert server_address(member("s3", "10.0.0.4", status=MemberStatus.FAILED), "dc1") == ""
    assert server_address(member("s4", "10.0.0.5", status=MemberStatus.LEFT), "dc1") == ""
    assert server_address(member("s5", "10.0.0.6", port=""), "dc1") == ""
    assert server_address(member("s6", "10.0.0.7", port="x"), "dc1") == ""


def test_addresses_get_the_default_port():
    assert with_port("10.0.0.1", 8300) == "10.0.0.1:8300"
    assert with_port("10.0.0.1:9000", 8300) == "10.0.0.1:9000"
    assert with_port("fd00::1", 8300) == "[fd00::1]:8300"
    assert with_port("[fd00::1]:9000", 8300) == "[fd00::1]:9000"


def test_gossip_servers_are_used_and_every_one_is_tried_before_any_twice():
    members = [member("s1", "10.0.0.1"), member("s2", "10.0.0.2"), member("s3", "10.0.0.3"),
               member("c1", "10.0.0.9", role="node")]
    servers = ServerList(datacenter="dc1", join=(), default_port=8300, rng=random.Random(7),
                         members=lambda: members)
    first_round = [servers.next() for _ in range(3)]
    assert sorted(first_round) == ["10.0.0.1:8300", "10.0.0.2:8300", "10.0.0.3:8300"]
    second_round = [servers.next() for _ in range(3)]
    assert sorted(second_round) == sorted(first_round)
    # a server that leaves the pool is not dialled again
    members[0] = member("s1", "10.0.0.1", status=MemberStatus.FAILED)
    assert {servers.next() for _ in range(6)} == {"10.0.0.2:8300", "10.0.0.3:8300"}


def test_no_gossip_server_means_no_server():
    servers = ServerList(datacenter="dc1", join=("10.0.0.1",), default_port=8300, rng=random.Random(1),
                         members=lambda: [member("c1", "10.0.0.9", role="node")])
    assert servers.known() == [] and servers.next() == ""


def test_a_fixed_list_is_used_without_gossip():
    servers = ServerList(datacenter="dc1", join=("10.0.0.1", "10.0.0.2:9000"), default_port=8300,
                         rng=random.Random(1))
    assert sorted(servers.known()) == ["10.0.0.1:8300", "10.0.0.2:9000"]


def test_the_server_that_just_failed_is_not_first_in_the_next_round():
    for seed in range(50):
        servers = ServerList(datacenter="dc1", join=("a:1", "b:1"), default_port=8300, rng=random.Random(seed))
        servers.next()
        servers.next()  # the round is used up
        servers.failed("a:1")
        assert servers.next() == "b:1", seed


def test_backoff_grows_with_failures_is_capped_and_resets():
    servers = ServerList(datacenter="dc1", join=("a:1",), default_port=8300, rng=random.Random(3))
    assert servers.backoff_s() == 0.0
    waits = []
    for _ in range(12):
        servers.failed("a:1")
        waits.append(servers.backoff_s())
    assert 0.05 <= waits[0] <= 0.1
    assert waits[3] > waits[0]
    assert max(waits) <= BACKOFF_MAX_S
    servers.succeeded()
    assert servers.backoff_s() == 0.0


@pytest.mark.parametrize(("nodes", "scale"), [(1, 1), (128, 1), (129, 2), (256, 2), (257, 3), (512, 3),
                                              (1024, 4), (10_000, 8)])
def test_anti_entropy_scale_factor(nodes, scale):
    # Consul agent/ae/ae.go scaleFactor: ceil(log2(n) - log2(128)) + 1 above 128 nodes
    assert scale_factor(nodes) == scale


def test_stream_batches_are_bounded_by_count_and_bytes():
    from appliance.rpc.feed import BATCH_BYTES, BATCH_ENTRIES, batches

    small = [(i, b"x") for i in range(1, 1200)]
    out = batches(small)
    assert [len(b) for b in out] == [BATCH_ENTRIES, BATCH_ENTRIES, 1199 - 2 * BATCH_ENTRIES]
    assert [i for b in out for i, _ in b] == list(range(1, 1200))  # order kept, nothing lost
    big = [(1, b"a" * (BATCH_BYTES // 2)), (2, b"b" * (BATCH_BYTES // 2)), (3, b"c" * (BATCH_BYTES * 2)), (4, None)]
    assert [[i for i, _ in b] for b in batches(big)] == [[1], [2], [3], [4]]
    assert batches([]) == []
