"""Real agent processes on loopback: Serf's key queries on both pools, members of another
datacenter refused, name conflicts logged, and the reconnect_timeout minimum.

One encrypted dc1 pool (a `-bootstrap` server, which also runs a WAN pool, and a client agent)
serves the first three tests:

* `cairn keyring -list` on the server answers for the WAN pool first (`WAN:`, the server alone)
  and then `dc1 (LAN):` with every member (`[2/2]`), as Consul's does, and so does the client
  (which asks a server); `-relay-factor 2` gives the same answer, `-local-only` leaves the WAN
  pool out, and `/v1/operator/keyring` carries `"WAN": true` for the first entry; a key installed
  through the client reaches both pools;
* a dc2 server that knows the key is refused by Consul's merge check: `cairn join` exits 1 with
  `Failed to join ...: Member 's1' part of wrong datacenter 'dc1'` (or 'c1'), the server logs
  `memberlist: Failed push/pull merge: Member 'dc2-server' part of wrong datacenter 'dc2'`, and
  neither LAN pool lists the other's member. Joined over the WAN instead, both servers list the
  WAN pool (`[2/2]`) and the LAN pool of each datacenter;
* a second agent started under an existing member's name is logged as a conflict on both sides
  (memberlist's `Conflicting address`, Serf's `Name conflict for ... are claiming`, and on the
  imposter `Node name conflicts with another node ... (Resolution enabled: false)`: Consul turns
  Serf's resolution off), while the member list keeps the original.

The last test checks `reconnect_timeout` and `reconnect_timeout_wan` below 8 h are refused with
Consul's text by `cairn validate` and `cairn agent`.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import PROJECT_ROOT, Agent, wait_until

pytestmark = pytest.mark.timeout(180)


def keygen() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parity")
    key = keygen()
    server = Agent(tmp, "s1")
    client = Agent(tmp, "c1", join=[server.lan_addr])
    started = [server, client]
    try:
        server.start("-server", "-bootstrap", "-encrypt", key)
        client.start("-encrypt", key, "-retry-interval", "1s")
        server.wait_http()
        client.wait_http()
        wait_until(lambda: server.members() == {"s1": 1, "c1": 1} and client.members() == {"s1": 1, "c1": 1},
                   timeout=30, what="the pool forms")
        yield tmp, key, server, client, started
    finally:
        for agent in started:
            agent.stop()


def test_keyring_lists_the_wan_pool_then_every_lan_member(pool):
    _, key, server, client, _ = pool
    out = server.cli("keyring", "-list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["==> Gathering installed encryption keys...", "", "WAN:", f"  {key} [1/1]",
                                       "", "dc1 (LAN):", f"  {key} [2/2]"]
    relayed = server.cli("keyring", "-list", "-relay-factor", "2")
    assert relayed.returncode == 0 and relayed.stdout == out.stdout, relayed.stderr
    local = server.cli("keyring", "-list", "-local-only")
    assert local.returncode == 0 and local.stdout.splitlines()[2:] == ["dc1 (LAN):", f"  {key} [2/2]"]
    primary = server.cli("keyring", "-list-primary")
    assert primary.stdout.splitlines()[0] == "==> Gathering installed primary encryption keys..."
    through_client = client.cli("keyring", "-list")
    assert through_client.returncode == 0 and through_client.stdout == out.stdout, through_client.stderr
    status, body = server.poll_json("/v1/operator/keyring?relay-factor=1")
    assert status == 200
    assert [(e["WAN"], e["Datacenter"], e["NumNodes"], e["Keys"], e["Messages"]) for e in body] == [
        (True, "dc1", 1, {key: 1}, {}), (False, "dc1", 2, {key: 2}, {})]
    new = keygen()
    out = client.cli("keyring", "-install", new)
    assert out.returncode == 0 and out.stdout.strip() == "==> Installing new gossip encryption key...", out.stderr
    status, body = server.poll_json("/v1/operator/keyring")
    assert [e["Keys"] for e in body] == [{key: 1, new: 1}, {key: 2, new: 2}]
    assert "serf: Received install-key query" in client.log()
    out = server.cli("keyring", "-remove", new)
    assert out.returncode == 0, out.stderr
    # each operation was a query handled by every member, acked by none (no ack asked), answered by all
    handled = re.search(r"^consul_serf_queries(?:_total)? (\S+)$", client.metrics(), re.M)
    assert handled and float(handled.group(1)) >= 8, client.metrics()[:2000]
    answers = re.search(r"^consul_serf_query_responses(?:_total)? (\S+)$", server.metrics(), re.M)
    assert answers and float(answers.group(1)) >= 8
    bad = server.cli("keyring", "-list", "-relay-factor", "9")
    assert bad.returncode == 1 and "Relay factor must be in range: [0, 5]" in bad.stderr


def test_another_datacenter_is_refused_on_the_lan_and_listed_over_the_wan(pool):
    tmp, key, server, client, started = pool
    other = Agent(tmp, "dc2-server")
    started.append(other)
    other.start("-server", "-bootstrap", "-datacenter", "dc2", "-encrypt", key)
    other.wait_http()
    out = other.cli("join", server.lan_addr)
    assert out.returncode == 1, out.stdout
    assert f"Error joining address '{server.lan_addr}'" in out.stderr
    # the first dc1 member of the server's table, which lists its members in no fixed order
    assert re.search(r"Failed to join 127\.0\.0\.1:\d+: Member '(s1|c1)' part of wrong datacenter 'dc1'", out.stderr)
    assert "Failed to join any nodes." in out.stderr
    wait_until(lambda: "memberlist: Failed push/pull merge: Member 'dc2-server' part of wrong datacenter 'dc2'"
               in server.log(), timeout=10, what="the server's refusal in its log")
    assert server.members() == {"s1": 1, "c1": 1} and other.members() == {"dc2-server": 1}
    # over the WAN the two datacenters federate, and the keyring covers every pool
    out = other.cli("join", "-wan", server.wan_addr)
    assert out.returncode == 0, out.stderr

    def listed() -> list[tuple[bool, str, int]]:
        status, body = server.poll_json("/v1/operator/keyring")
        return [(e["WAN"], e["Datacenter"], e["NumNodes"]) for e in body] if status == 200 else []

    wait_until(lambda: listed() == [(True, "dc1", 2), (False, "dc1", 2), (False, "dc2", 1)], timeout=30,
               what="the keyring lists the WAN pool and both datacenters")
    out = other.cli("keyring", "-list")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[2:] == ["WAN:", f"  {key} [2/2]", "", "dc2 (LAN):", f"  {key} [1/1]", "",
                                           "dc1 (LAN):", f"  {key} [2/2]"]
    other.stop()


def test_a_second_agent_under_a_taken_name_is_logged_and_kept_out(pool):
    tmp, key, server, client, started = pool
    imposter = Agent(tmp, "imposter")
    imposter.name = "c1"  # the name the client already has, at another address (its own data dir)
    started.append(imposter)
    imposter.start("-encrypt", key, "-join", server.lan_addr)
    wait_until(lambda: "Node name conflicts with another node at 127.0.0.1:" in imposter.log(), timeout=30,
               what="the imposter sees the conflict")
    text = imposter.log()
    assert f"127.0.0.1:{client.serf_lan_port}. Names must be unique! (Resolution enabled: false)" in text
    wait_until(lambda: "serf: Name conflict for 'c1' both 127.0.0.1:" in server.log(), timeout=10,
               what="the server's conflict warning")
    log = server.log()
    assert f"memberlist: Conflicting address for c1. Mine: 127.0.0.1:{client.serf_lan_port} " in log
    assert f"Theirs: 127.0.0.1:{imposter.serf_lan_port}" in log
    status, members = server.poll_json("/v1/agent/members")
    record = next(m for m in members if m["Name"] == "c1")
    assert record["Port"] == client.serf_lan_port and record["Status"] == 1
    assert imposter.alive()  # Consul's setting: no shutdown
    imposter.stop()


@pytest.mark.parametrize(("key", "name"), [("reconnect_timeout", "ReconnectTimeoutLan"),
                                           ("reconnect_timeout_wan", "ReconnectTimeoutWan")])
def test_reconnect_timeout_below_eight_hours_is_refused(tmp_path: Path, key: str, name: str):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gossip.hcl").write_text(f'data_dir = "{tmp_path / "data"}"\n{key} = "4h"\n')
    out = subprocess.run([sys.executable, "-m", "appliance", "validate", str(conf)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 1 and out.stderr.strip() == f"Config validation failed: {name} must be >= 8h0m0s"
    (conf / "gossip.hcl").write_text(f'data_dir = "{tmp_path / "data"}"\n{key} = "8h"\n')
    out = subprocess.run([sys.executable, "-m", "appliance", "validate", str(conf)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "Configuration is valid!", out.stderr
    out = subprocess.run([sys.executable, "-m", "appliance", "agent", "-dev", "-hcl", f'{key} = "1h"'],
                         capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert out.returncode == 1 and f"{name} must be >= 8h0m0s" in out.stdout + out.stderr
