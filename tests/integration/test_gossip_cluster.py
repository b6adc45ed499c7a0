"""Real agent processes in one LAN gossip pool on loopback: join, failure, leave, force-leave, encryption.

The pool: three servers (`cairn agent -server -bootstrap-expect 3`) and three client agents, each
with its own ports, all started with `-retry-join` on the servers' serf_lan ports (the servers
find each other for bootstrap_expect through gossip). What is checked, in order, on one pool:

* every agent lists all six members `alive` in `cairn members` (Consul's columns), the leader
  has registered each of them with `serfHealth` passing and every server in the `consul`
  service, and /v1/agent/self reports the pool in its `serf_lan` stats;
* `kill -9` of a client: `failed` in `cairn members` and its `serfHealth` critical within
  `FAIL_BOUND_S`; `cairn force-leave` then makes it `left` everywhere and the leader
  deregisters it;
* `kill -9` of a follower server: within `FAIL_BOUND_S` it is out of
  `/v1/health/service/consul?passing` and of the DNS SRV answer for `consul.service.consul`;
  `force-leave -prune` forgets it;
* `cairn leave` on the other client: `left` on the servers and deregistered; its process exits.

A second, encrypted pool (one `-bootstrap` server and one client, both with `-encrypt K1`)
refuses an agent with no key and one with a wrong key (each gives up after `-retry-max 1` with
Consul's "max join retry exhausted" and exit code 1, and never appears in the member list),
then rolls the key with `cairn keyring -install K2`, `-use K2`, `-remove K1`: the pool keeps
working on K2, and removing the primary key is refused with memberlist's text. The server also
runs a WAN pool (alone in it): every operation covers it too, and the list shows it first
(`"WAN": true`, `WAN:` in the CLI), as Consul's does.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import time

import pytest
from dnslib import QTYPE, DNSRecord

from appliance.gossip import GossipConfig
from tests.harness import Agent, http, server_args, wait_until
from tests.sim.gossip_sim import detection_expected_s

pytestmark = pytest.mark.timeout(150)

# Failed and gone from ?passing and DNS within what memberlist's LAN profile expects for this
# pool (tests/sim/gossip_sim.py: the first probe, the suspicion minimum with Lifeguard's
# confirmations, dissemination; 12.8 s) plus the leader's reconcile. The gossip issue's 10 s is a
# measured figure, not a bound to fail on: the times are printed (typically 5-8 s here), and
# BENCHMARKS.md keeps the pool figures. A 10 s bound failed now and then on a quiet machine,
# when fewer confirmations came in time.
FAIL_BOUND_S = detection_expected_s(GossipConfig.lan(), 6) + 3.0


def dns_srv_ports(agent: Agent, name: str) -> list[int]:
    """The ports of the SRV records for `name` from the agent's DNS port (empty on NXDOMAIN)."""
    query = DNSRecord.question(name, "SRV")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        sock.sendto(query.pack(), ("127.0.0.1", agent.dns_port))
        reply = DNSRecord.parse(sock.recv(4096))
    except OSError:
        return [-1]
    finally:
        sock.close()
    return sorted(rr.rdata.port for rr in reply.rr if rr.rtype == QTYPE.SRV)


def passing_consul_nodes(agent: Agent) -> set[str]:
    status, body = agent.poll_json("/v1/health/service/consul?passing")
    return {e["Node"]["Node"] for e in body} if status == 200 else {"?"}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pool")
    servers = [Agent(tmp, f"s{i}") for i in (1, 2, 3)]
    clients = [Agent(tmp, f"c{i}") for i in (1, 2, 3)]
    for a in servers + clients:
        a.join = [s.lan_addr for s in servers]
    try:
        for s in servers:
            s.start(*server_args(3), "-retry-interval", "1s")
        for c in clients:
            c.start("-retry-interval", "1s")
        for a in servers + clients:
            a.wait_http()
        yield servers, clients
    finally:
        for a in servers + clients:
            a.stop()


def leader_of(servers: list[Agent]) -> Agent:
    def find():
        for s in servers:
            status, body = s.poll_json("/v1/status/leader")
            if status == 200 and body:
                return next((x for x in servers if x.server_addr == body), None)
        return None

    return wait_until(find, timeout=30, what="a Raft leader")


def test_pool_converges_and_the_leader_registers_every_member(pool):
    servers, clients = pool
    everyone = servers + clients
    names = {a.name for a in everyone}
    for a in everyone:  # Consul: every member sees the whole LAN pool
        wait_until(lambda a=a: a.members() == {n: 1 for n in names}, timeout=30,
                   what=f"all six members alive at {a.name}")
    leader = leader_of(servers)
    for n in names:  # the leader's reconcile: serfHealth passing for each alive member
        wait_until(lambda n=n: leader.serf_health(n) == "passing", timeout=20, what=f"serfHealth of {n} passing")
    wait_until(lambda: passing_consul_nodes(leader) == {s.name for s in servers}, timeout=20,
               what="every server in the consul service")
    _, health = leader.poll_json(f"/v1/health/node/{clients[0].name}")
    check = next(c for c in health if c["CheckID"] == "serfHealth")
    assert (check["Name"], check["Output"]) == ("Serf Health Status", "Agent alive and reachable")

    out = clients[0].cli("members")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition",
                                "Segment"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["s1", "s2", "s3", "c1", "c2", "c3"]  # servers first, then by name
    assert rows[0][1] == servers[0].lan_addr and rows[0][2:4] == ["alive", "server"]
    assert rows[3][2:4] == ["alive", "client"] and rows[3][-1] == "<default>"
    assert clients[0].cli("members", "-status", "failed").returncode == 2  # nothing matches: exit 2

    _, me = servers[0].poll_json("/v1/agent/self")
    assert me["Member"]["Name"] == "s1" and me["Member"]["Port"] == servers[0].serf_lan_port
    stats = me["Stats"]["serf_lan"]
    assert stats["members"] == "6" and stats["failed"] == "0" and stats["encrypted"] == "false"
    assert all(isinstance(v, str) for v in stats.values())
    status, body = servers[0].poll_json("/v1/agent/members?segment=")
    assert status == 200 and len(body) == 6
    status, _ = servers[0].poll_json("/v1/agent/members?wan=1&segment=x")
    assert status == 400
    status, wan = servers[0].poll_json("/v1/agent/members?wan=1")
    assert sorted(m["Name"] for m in wan) == ["s1.dc1", "s2.dc1", "s3.dc1"]

    status, _, metrics = http("GET", servers[0].url + "/v1/agent/metrics", timeout=5)
    metrics = json.loads(metrics)
    counters = {c["Name"] for c in metrics["Counters"]}
    assert {"consul.memberlist.udp.sent", "consul.memberlist.udp.received", "consul.serf.member.join",
            "consul.memberlist.msg.alive", "consul.memberlist.tcp.accept"} <= counters, counters
    # probe timings: the JSON form holds only the last finished 10 s interval, which a pool this
    # young may not have yet; the Prometheus form is cumulative
    status, _, text = http("GET", servers[0].url + "/v1/agent/metrics?format=prometheus", timeout=5)
    assert status == 200 and "\nconsul_memberlist_probeNode_count " in text.decode(), text[:2000]
    gauges = {g["Name"].split(".", 2)[-1]: g["Value"] for g in metrics["Gauges"]}  # consul.<host>.<name>
    assert gauges.get("memberlist.health.score") == 0 and gauges.get("serf.members") == 6, gauges


def test_kill_9_fails_the_member_and_force_leave_removes_it(pool):
    servers, clients = pool
    leader = leader_of(servers)
    victim_server = next(s for s in servers if s is not leader)
    victim_client = clients[2]
    observer = next(s for s in servers if s not in (leader, victim_server))

    def failed_and_critical(victim: Agent) -> bool:
        return (all(a.members().get(victim.name) == 4 for a in (leader, observer))
                and leader.serf_health(victim.name) == "critical")

    # a client: failed in `cairn members` and its serfHealth critical within 10 s
    started = time.monotonic()
    victim_client.kill()
    wait_until(lambda: failed_and_critical(victim_client), timeout=FAIL_BOUND_S, interval=0.1,
               what="the killed client failed and critical")
    print(f"client kill -9 -> failed and critical after {time.monotonic() - started:.1f}s")
    out = observer.cli("members", "-status", "failed")
    assert out.returncode == 0 and [line.split()[0] for line in out.stdout.splitlines()[1:]] == [victim_client.name]
    _, health = leader.poll_json(f"/v1/health/node/{victim_client.name}")
    check = next(c for c in health if c["CheckID"] == "serfHealth")
    assert check["Output"] == "Agent not live or unreachable"

    # force-leave: failed -> left everywhere, and the leader deregisters the node
    out = observer.cli("force-leave", victim_client.name)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    # one broadcast round normally (well under a second); 10 s leaves room for a loaded machine
    # (a full-suite run beside other load once took over 5 s)
    wait_until(lambda: all(a.members().get(victim_client.name) == 3 for a in (leader, observer)), timeout=10,
               what="force-left client is left everywhere")
    wait_until(lambda: leader.poll_json(f"/v1/catalog/node/{victim_client.name}") == (200, None), timeout=5,
               what="the force-left client deregistered")

    # a follower server: also gone from ?passing and from DNS (which answers healthy instances only)
    assert len(dns_srv_ports(observer, "consul.service.consul")) == 3
    started = time.monotonic()
    victim_server.kill()
    wait_until(lambda: failed_and_critical(victim_server) and len(passing_consul_nodes(observer)) == 2
               and dns_srv_ports(observer, "consul.service.consul") == sorted(
                   [leader.server_port, observer.server_port]),
               timeout=FAIL_BOUND_S, interval=0.1, what="the killed server failed, out of ?passing and DNS")
    print(f"server kill -9 -> out of ?passing and DNS after {time.monotonic() - started:.1f}s")
    _, instances = observer.poll_json("/v1/catalog/service/consul")
    assert len(instances) == 3  # still registered, no longer healthy

    # -prune: the member is forgotten at once
    out = observer.cli("force-leave", "-prune", victim_server.name)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: victim_server.name not in observer.members(), timeout=5, what="pruned server gone")
    out = observer.cli("force-leave", "no-such-node")
    assert out.returncode == 1 and "agent: No node found with name 'no-such-node'" in out.stderr


def test_leave_shows_left_and_deregisters(pool):
    servers, clients = pool
    leaver = clients[0]
    leader = leader_of([s for s in servers if s.proc.poll() is None])
    out = leaver.cli("leave")
    assert out.returncode == 0 and out.stdout.strip() == "Graceful leave complete", out.stderr
    wait_until(lambda: leader.members().get(leaver.name) == 3, timeout=5, what="left at the leader")
    wait_until(lambda: leader.poll_json(f"/v1/catalog/node/{leaver.name}") == (200, None), timeout=5,
               what="the left client deregistered")
    leaver.proc.wait(15)
    assert "Graceful leave complete" in leaver.log()


# ---------------------------------------------------------------------------------- encryption


def keygen() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def keyring_list(agent: Agent, wan: bool = False) -> dict:
    status, body = agent.poll_json("/v1/operator/keyring")
    assert status == 200, body
    wan_entry, lan_entry = body  # a server: the WAN pool first, then its datacenter's LAN pool
    assert wan_entry["WAN"] is True and lan_entry["WAN"] is False
    return wan_entry if wan else lan_entry


def test_encrypted_pool_refuses_strangers_and_rolls_its_key(tmp_path):
    k1, k2, wrong = keygen(), keygen(), keygen()
    server, member = Agent(tmp_path, "e1"), Agent(tmp_path, "e2")
    no_key, bad_key = Agent(tmp_path, "nokey"), Agent(tmp_path, "badkey")
    agents = [server, member, no_key, bad_key]
    try:
        server.start("-server", "-bootstrap", "-encrypt", k1)
        member.start("-encrypt", k1, "-retry-join", server.lan_addr, "-retry-interval", "1s")
        refused = ("-retry-join", server.lan_addr, "-retry-interval", "1s", "-retry-max", "1")
        no_key.start(*refused)
        bad_key.start("-encrypt", wrong, *refused)
        server.wait_http()
        wait_until(lambda: server.members() == {"e1": 1, "e2": 1}, timeout=30, what="the keyed member joins")
        for stranger in (no_key, bad_key):  # both give up: never admitted
            assert stranger.proc.wait(30) == 1, stranger.log()
            assert "max join retry exhausted" in stranger.log()
        assert set(server.members()) == {"e1", "e2"}
        _, me = server.poll_json("/v1/agent/self")
        assert me["Stats"]["serf_lan"]["encrypted"] == "true"

        # rotation: install, use, remove (Consul's order)
        entry = keyring_list(server)
        assert entry["Keys"] == {k1: 2} and entry["PrimaryKeys"] == {k1: 2} and entry["NumNodes"] == 2
        assert entry["WAN"] is False and entry["Datacenter"] == "dc1"
        wan = keyring_list(server, wan=True)
        assert wan["Keys"] == {k1: 1} and wan["NumNodes"] == 1 and wan["Datacenter"] == "dc1"
        out = server.cli("keyring", "-install", k2)
        assert out.returncode == 0 and "==> Installing new gossip encryption key..." in out.stdout, out.stderr
        assert keyring_list(server)["Keys"] == {k1: 2, k2: 2}
        assert server.cli("keyring", "-use", k2).returncode == 0
        assert keyring_list(server)["PrimaryKeys"] == {k2: 2}
        assert keyring_list(server, wan=True)["PrimaryKeys"] == {k2: 1}
        out = server.cli("keyring", "-remove", k2)  # the primary: refused on every member
        assert out.returncode == 1 and "Removing the primary key is not allowed" in out.stderr
        assert "dc1 (LAN) error: 2/2 nodes reported failure" in out.stderr
        assert "WAN error: 1/1 nodes reported failure" in out.stderr
        assert server.cli("keyring", "-remove", k1).returncode == 0
        out = server.cli("keyring", "-list")
        assert out.returncode == 0 and f"  {k2} [2/2]" in out.stdout and k1 not in out.stdout
        lines = out.stdout.splitlines()
        assert lines[:4] == ["==> Gathering installed encryption keys...", "", "WAN:", f"  {k2} [1/1]"], lines
        assert lines[4:7] == ["", "dc1 (LAN):", f"  {k2} [2/2]"], lines
        # the ring is persisted, and gossip carries on with K2 only
        ring = json.loads((server.data_dir / "serf" / "local.keyring").read_text())
        assert ring == [k2]
        time.sleep(2)
        assert server.members() == {"e1": 1, "e2": 1} and member.members() == {"e1": 1, "e2": 1}
        status, _, body = http("POST", server.url + "/v1/operator/keyring", {"Key": "not base64!"}, timeout=10)
        assert status == 500 and b"dc1 (LAN) error" in body and b"WAN error" in body
    finally:
        for a in agents:
            a.stop()
