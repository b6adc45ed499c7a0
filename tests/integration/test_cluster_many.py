"""Thirty real agent processes on loopback: 3 servers and 27 client agents in one LAN gossip pool.

Every agent is a `cairn agent` process with its own HTTP, DNS, RPC and serf ports and data dir
(the `Agent` helper of test_gossip_cluster.py); the servers run `-server -bootstrap-expect 3` with
`raft_multiplier = 1`, the clients `-server=false`, and all thirty start at once with
`-retry-join` on the three servers' serf_lan addresses. What is checked, in order, on that pool:

* convergence: every agent's /v1/agent/members (what `cairn members` prints) lists all thirty
  `alive`; `cairn members` itself is run on the three servers and on three clients; every node is
  in /v1/catalog/nodes with `serfHealth` passing (the leader's reconcile), and a `web` service
  registered on three clients is answered by DNS (dig, SRV) on a fourth client;
* the idle cost of a client agent and of a server in that converged pool: CPU% over 30 s from
  utime+stime in /proc/<pid>/stat, VmRSS and VmHWM from /proc/<pid>/status, and gossip bytes per
  second from the prometheus counters consul_memberlist_udp_sent/udp_received/tcp_sent (printed;
  bounds that a leak or a busy loop would break are asserted);
* `kill -9` of a client: within 15 s it is `failed` in `cairn members` on the servers, and its
  `web` instance is out of /v1/health/service/web?passing and of the DNS answer (the issue says
  10 s; why that is not held at 30 members is at FAIL_BOUND_S);
* `cairn leave` on another client: `left` on the servers, its node deregistered from the catalog;
* a partitioned client: nftables rules drop every packet to and from it, except its HTTP port
  (the test's window on it). The cut is made by socket owner: the client runs with a group id of
  its own, and an output rule marks the conntrack entry of every connection its sockets send on,
  so everything the agent sends (UDP gossip, TCP push-pull, its RPC stream to a server) and every
  answer on those connections is dropped, silently, as on a real network; new packets to its serf
  port are dropped too. The others suspect it (consul_memberlist_msg_suspect) and may declare it
  failed; once the rules go it refutes and is `alive` on every agent again, and the status flaps
  stay few: at most one failed-and-back per observer in a 0.2 s poll of the servers' member lists,
  at most one consul_serf_member_flap per agent; the cut-off client itself, which heard no one,
  declares no one failed (Lifeguard: unconfirmed suspicions run to 6 x the minimum). Skipped
  with the reason when this machine cannot run nft (not root, no nftables, no conntrack).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from dnslib import QTYPE, DNSRecord

from tests.harness import Agent, http, wait_until

pytestmark = pytest.mark.timeout(240)

SERVERS = 3
CLIENTS = 27
# The issue: `failed` and out of DNS within 10 s. At 30 members memberlist's suspicion minimum is
# 4 x log10(30) x 1 s = 5.9 s, counted from a first failed probe (1-3 s after the kill); cairn's
# last-chance probe runs inside that time (docs/internals/gossip.md). A pool whose Lifeguard
# confirmations do not arrive fails this: with one confirmation of the two expected the timeout
# alone is 16.8 s. The test's bound sits between the two: 15 s still fails such a pool, and leaves
# a loaded machine room beyond the 7.8 s measured on a quiet one (the 10 s target is a benchmark's
# figure, bench/gossip; a run under load once took over 10 s with no fault).
FAIL_BOUND_S = 15.0
IDLE_WINDOW_S = 30.0
TELEMETRY = 'telemetry { prometheus_retention_time = "10m" disable_hostname = true }'
ALIVE, LEFT, FAILED = 1, 3, 4
WEB_PORTS = {"c01": 18001, "c02": 18002, "c03": 18003}  # a `web` instance on each of these clients
DNS_CLIENT = "c04"  # asks DNS about `web`
KILLED, LEAVER, PARTITIONED, IDLE_CLIENT = "c01", "c02", "c10", "c20"


# ------------------------------------------------------------------------------------ nftables


def _nft(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=10)


class Cut:
    """nftables rules that isolate the sockets of one process group id, except one TCP port.

    From the start, an output rule sets a conntrack mark on every connection (TCP or UDP flow) a
    socket of group `gid` sends on, except from `keep_port`. `cut()` adds input rules dropping
    every packet of a marked connection, both ways, and every packet to `serf_port`; `heal()`
    removes them. The drops happen on input, so senders see no error, as on a real network."""

    MARK = 0x6361

    def __init__(self, gid: int, keep_port: int, serf_port: int) -> None:
        self.table = f"cairn_cut_{os.getpid()}"
        self.gid, self.keep_port, self.serf_port = gid, keep_port, serf_port
        self.installed = False

    def unavailable(self) -> str:
        """Why this machine cannot make the cut ("" when it can): tried for real, then removed."""
        if os.geteuid() != 0:
            return "nftables rules need root"
        if shutil.which("nft") is None:
            return "nft is missing (Debian package nftables)"
        done = self._install()
        if done.returncode != 0:
            return f"nft cannot mark by socket group and conntrack: {done.stderr.strip()}"
        self.remove()
        return ""

    def _install(self) -> subprocess.CompletedProcess[str]:
        done = _nft(f"""table inet {self.table} {{
  chain out {{
    type filter hook output priority 0;
    meta skgid {self.gid} tcp sport {self.keep_port} accept
    meta skgid {self.gid} ct mark set {self.MARK}
  }}
  chain in {{
    type filter hook input priority 0;
  }}
}}
""")
        self.installed = done.returncode == 0
        return done

    def install(self) -> None:
        done = self._install()
        assert done.returncode == 0, done.stderr

    def cut(self) -> None:
        done = _nft(f"""add rule inet {self.table} in tcp dport {self.keep_port} accept
add rule inet {self.table} in ct mark {self.MARK} meta l4proto {{ tcp, udp }} drop
add rule inet {self.table} in meta l4proto {{ tcp, udp }} th dport {self.serf_port} drop
""")
        assert done.returncode == 0, done.stderr

    def heal(self) -> None:
        done = _nft(f"flush chain inet {self.table} in\n")
        assert done.returncode == 0, done.stderr

    def remove(self) -> None:
        if self.installed:
            subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True, timeout=10)
            self.installed = False


# ------------------------------------------------------------------------------------ helpers


def dig_srv_ports(agent: Agent, name: str) -> list[int] | None:
    """The SRV ports dig gets for `name` from the agent's DNS port; None when dig got no reply.
    Without dig (Debian package bind9-dnsutils) the same question goes out through dnslib."""
    if shutil.which("dig") is None:
        try:
            reply = DNSRecord.parse(DNSRecord.question(name, "SRV").send("127.0.0.1", agent.dns_port, timeout=2))
        except OSError:
            return None
        return sorted(rr.rdata.port for rr in reply.rr if rr.rtype == QTYPE.SRV)
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(agent.dns_port), "+short", "+time=2", "+tries=1",
                           name, "SRV"], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        return None
    return sorted(int(line.split()[2]) for line in done.stdout.splitlines() if len(line.split()) == 4)


def passing_web_nodes(agent: Agent) -> list[str] | None:
    status, body = agent.poll_json("/v1/health/service/web?passing")
    return sorted(e["Node"]["Node"] for e in body) if status == 200 else None


def prometheus(agent: Agent, *names: str) -> dict[str, float]:
    """The value of each counter in `names` (summed over its label sets; 0 when absent)."""
    try:
        status, _, body = http("GET", agent.url + "/v1/agent/metrics?format=prometheus", timeout=5)
    except OSError:
        return {}
    if status != 200:
        return {}
    text = body.decode()
    values = {}
    for name in names:
        found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
        values[name] = sum(float(v) for v in found)
    return values


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process in KiB, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


# ------------------------------------------------------------------------------------ the pool


class Pool:
    def __init__(self, servers: list[Agent], clients: list[Agent], cut: Cut | None, cut_skip: str) -> None:
        self.servers, self.clients, self.cut, self.cut_skip = servers, clients, cut, cut_skip
        self.by_name = {a.name: a for a in servers + clients}
        self.started_at = 0.0

    @property
    def everyone(self) -> list[Agent]:
        return self.servers + self.clients

    def live(self) -> list[Agent]:
        return [a for a in self.everyone if a.proc is not None and a.proc.poll() is None]

    def leader(self) -> Agent:
        def find() -> Agent | None:
            for s in self.servers:
                status, body = s.poll_json("/v1/status/leader")
                if status == 200 and body:
                    return next((x for x in self.servers if x.server_addr == body), None)
            return None

        return wait_until(find, timeout=30, what="a Raft leader")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("many")
    gid = 40000 + os.getpid() % 20000
    servers = [Agent(tmp, f"s{i}") for i in range(1, SERVERS + 1)]
    clients = [Agent(tmp, f"c{i:02d}", gid=gid) if f"c{i:02d}" == PARTITIONED else Agent(tmp, f"c{i:02d}")
               for i in range(1, CLIENTS + 1)]
    victim = next(c for c in clients if c.name == PARTITIONED)
    cut = Cut(gid, keep_port=victim.http_port, serf_port=victim.serf_lan_port)
    cut_skip = cut.unavailable()
    join = [arg for s in servers for arg in ("-retry-join", s.lan_addr)]
    try:
        if not cut_skip:
            cut.install()  # marks only: nothing is dropped until cut()
        started = time.monotonic()
        for s in servers:
            s.start("-server", "-bootstrap-expect", str(SERVERS), "-retry-interval", "1s", *join,
                    "-hcl", "performance { raft_multiplier = 1 }\n" + TELEMETRY)
        for c in clients:
            c.start("-server=false", "-retry-interval", "1s", *join, "-hcl", TELEMETRY)
        for a in servers + clients:
            a.wait_http()
        pool = Pool(servers, clients, None if cut_skip else cut, cut_skip)
        pool.started_at = started
        print(f"\n30 agents answering HTTP {time.monotonic() - started:.1f}s after the first start")
        yield pool
    finally:
        cut.remove()
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda a: a.stop(), servers + clients))


# ------------------------------------------------------------------------------------ tests


def test_thirty_agents_converge_register_and_answer_dns(pool):
    everyone = pool.everyone
    names = {a.name for a in everyone}
    all_alive = {n: ALIVE for n in names}

    lagging: dict[str, dict[str, int]] = {}

    def converged() -> bool:
        with ThreadPoolExecutor(6) as ex:
            views = list(ex.map(lambda a: a.members(), everyone))
        lagging.clear()
        lagging.update({a.name: view for a, view in zip(everyone, views, strict=True) if view != all_alive})
        return not lagging

    try:
        wait_until(converged, timeout=60, interval=0.5, what="all 30 alive on all 30 agents")
    except BaseException:
        print(f"\nagents without all 30 alive, with their member lists: {lagging}")
        raise
    print(f"members converged on all 30 agents {time.monotonic() - pool.started_at:.1f}s after the first start")

    # `cairn members` itself (the same data): all three servers and three clients
    for a in pool.servers + [pool.by_name["c05"], pool.by_name["c17"], pool.by_name["c27"]]:
        out = a.cli("members")
        assert out.returncode == 0, out.stderr
        rows = [line.split() for line in out.stdout.splitlines()[1:]]
        assert len(rows) == 30 and {r[0] for r in rows} == names, out.stdout
        assert all(r[2] == "alive" for r in rows), out.stdout
        assert [r[3] for r in rows] == ["server"] * 3 + ["client"] * 27  # servers first
        assert [r[0] for r in rows[:3]] == ["s1", "s2", "s3"]

    # the leader's reconcile: each node in the catalog with serfHealth passing
    leader = pool.leader()

    def serf_passing() -> set[str]:
        status, body = leader.poll_json("/v1/health/state/passing")
        return {c["Node"] for c in body if c["CheckID"] == "serfHealth"} if status == 200 else set()

    wait_until(lambda: serf_passing() == names, timeout=30, interval=0.5, what="serfHealth passing for all 30")
    for a in (leader, pool.by_name["c27"]):  # a server and a client's replica agree
        status, nodes = a.poll_json("/v1/catalog/nodes")
        assert status == 200 and sorted(n["Node"] for n in nodes) == sorted(names)

    # a service on three clients: DNS on a fourth answers every instance
    for name, port in WEB_PORTS.items():
        status, _, body = http("PUT", pool.by_name[name].url + "/v1/agent/service/register",
                               {"Name": "web", "ID": "web", "Port": port}, timeout=10)
        assert status == 200, body
    asker = pool.by_name[DNS_CLIENT]
    wait_until(lambda: dig_srv_ports(asker, "web.service.consul") == sorted(WEB_PORTS.values()), timeout=20,
               what="three web instances in DNS on another client")
    assert passing_web_nodes(asker) == sorted(WEB_PORTS)


def test_idle_cost_of_a_client_and_a_server(pool):
    leader = pool.leader()
    follower = next(s for s in pool.servers if s is not leader)
    client = pool.by_name[IDLE_CLIENT]
    counters = ("consul_memberlist_udp_sent", "consul_memberlist_udp_received", "consul_memberlist_tcp_sent")
    agents = pool.everyone
    cpu0 = {a.name: cpu_seconds(a.proc.pid) for a in agents}
    bytes0 = {a.name: prometheus(a, *counters) for a in (client, follower, leader)}
    t0 = time.monotonic()
    time.sleep(IDLE_WINDOW_S)  # the measurement window itself: nothing to wait for
    elapsed = time.monotonic() - t0
    cpu = {a.name: 100.0 * (cpu_seconds(a.proc.pid) - cpu0[a.name]) / elapsed for a in agents}
    bytes1 = {a.name: prometheus(a, *counters) for a in (client, follower, leader)}
    mem = {a.name: memory_kib(a.proc.pid) for a in agents}

    client_cpu = [cpu[c.name] for c in pool.clients]
    print(f"\nidle {elapsed:.1f}s in a converged pool of 30 (CPU% of one core, utime+stime from /proc/<pid>/stat;"
          " RSS from /proc/<pid>/status):")
    for role, a in (("client", client), ("follower server", follower), ("leader server", leader)):
        rate = {k.removeprefix("consul_memberlist_"): (bytes1[a.name][k] - bytes0[a.name][k]) / elapsed
                for k in counters}
        print(f"  {role} {a.name}: CPU {cpu[a.name]:.2f}%  RSS {mem[a.name]['VmRSS'] / 1024:.1f} MiB"
              f"  (peak {mem[a.name]['VmHWM'] / 1024:.1f} MiB)  gossip B/s: "
              + "  ".join(f"{k} {v:.0f}" for k, v in rate.items()))
        # every member gossips and probes: a silent one is broken
        assert rate["udp_sent"] > 0 and rate["udp_received"] > 0, (a.name, rate)
    print(f"  all 27 clients: CPU% median {statistics.median(client_cpu):.2f} max {max(client_cpu):.2f};"
          f" RSS MiB median {statistics.median(mem[c.name]['VmRSS'] for c in pool.clients) / 1024:.1f}"
          f" max {max(mem[c.name]['VmRSS'] for c in pool.clients) / 1024:.1f}")
    # bounds a busy loop or a leak would break, with room for a loaded machine: an idle client
    # does a probe a second, five gossip rounds a second and a push-pull every 30 s (measured
    # here: 0.3-0.4% of a core, 65 MiB)
    assert statistics.median(client_cpu) < 5.0, cpu
    assert max(client_cpu) < 15.0, cpu
    assert all(mem[c.name]["VmRSS"] < 200 * 1024 for c in pool.clients), mem


def test_kill_9_of_a_client_is_failed_and_out_of_health_and_dns(pool):
    victim = pool.by_name[KILLED]
    asker = pool.by_name[DNS_CLIENT]
    leader = pool.leader()
    survivors = sorted(p for n, p in WEB_PORTS.items() if n != KILLED)

    failed_at: list[float] = []
    suspected_at: list[float] = []
    suspect = "consul_memberlist_msg_suspect"
    suspects0 = {s.name: prometheus(s, suspect)[suspect] for s in pool.servers}

    def gone() -> bool:
        if not suspected_at and any(prometheus(s, suspect)[suspect] > suspects0[s.name] for s in pool.servers):
            suspected_at.append(time.monotonic())
        if not all(s.members().get(KILLED) == FAILED for s in pool.servers):
            return False
        failed_at[:] = failed_at or [time.monotonic()]
        return (passing_web_nodes(asker) == sorted(n for n in WEB_PORTS if n != KILLED)
                and passing_web_nodes(leader) == sorted(n for n in WEB_PORTS if n != KILLED)
                and dig_srv_ports(asker, "web.service.consul") == survivors)

    started = time.monotonic()
    victim.kill(signal.SIGKILL)
    try:
        wait_until(gone, timeout=FAIL_BOUND_S, interval=0.1,
                   what="the killed client failed on every server, out of ?passing and DNS")
    except BaseException:
        views = {a.name: a.members().get(KILLED) for a in pool.live()}
        scores = {s.name: (s.poll_json("/v1/agent/self")[1] or {}).get("Stats", {}).get("serf_lan", {})
                  .get("health_score") for s in pool.servers}
        print(f"\n{KILLED}'s status {time.monotonic() - started:.1f}s after kill -9, by agent: {views};"
              f" servers' health scores: {scores}; passing web nodes: {passing_web_nodes(leader)};"
              f" DNS: {dig_srv_ports(asker, 'web.service.consul')}")
        raise
    scores = {s.name: s.poll_json("/v1/agent/self")[1]["Stats"]["serf_lan"]["health_score"] for s in pool.servers}
    print(f"\nkill -9 of {KILLED}: suspected by a server after {suspected_at[0] - started:.1f}s,"
          f" failed on all servers after {failed_at[0] - started:.1f}s,"
          f" out of ?passing and DNS after {time.monotonic() - started:.1f}s; servers' health scores: {scores}")
    for s in pool.servers:
        out = s.cli("members", "-status", "failed")
        assert out.returncode == 0, out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == [KILLED]
    _, instances = leader.poll_json("/v1/catalog/service/web")
    assert KILLED in {i["Node"] for i in instances}  # failed is not left: still registered, critical


def test_leave_shows_left_and_deregisters_the_node(pool):
    leaver = pool.by_name[LEAVER]
    leader = pool.leader()
    out = leaver.cli("leave")
    assert out.returncode == 0 and out.stdout.strip() == "Graceful leave complete", (out.stdout, out.stderr)
    wait_until(lambda: all(s.members().get(LEAVER) == LEFT for s in pool.servers), timeout=10,
               what="left on every server")
    for s in pool.servers:
        out = s.cli("members", "-status", "left")
        assert out.returncode == 0 and [line.split()[0] for line in out.stdout.splitlines()[1:]] == [LEAVER]
    wait_until(lambda: leader.poll_json(f"/v1/catalog/node/{LEAVER}") == (200, None), timeout=10,
               what="the left client deregistered")
    assert leaver.proc.wait(15) == 0
    asker = pool.by_name[DNS_CLIENT]
    wait_until(lambda: dig_srv_ports(asker, "web.service.consul") == [WEB_PORTS["c03"]], timeout=10,
               what="only c03's web in DNS")


class StatusPoll:
    """Polls every observer's view of one member every 0.2 s and keeps each status change."""

    def __init__(self, observers: list[Agent], node: str) -> None:
        self.observers, self.node = observers, node
        self.seen: dict[str, list[int]] = {o.name: [] for o in observers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for o in self.observers:
                status = o.members().get(self.node)
                if status is not None and (not self.seen[o.name] or self.seen[o.name][-1] != status):
                    self.seen[o.name].append(status)
            self._stop.wait(0.2)

    def __enter__(self) -> StatusPoll:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_partitioned_client_is_suspected_then_refutes_without_a_flap_storm(pool):
    if pool.cut is None:
        pytest.skip(f"cannot cut a partition on this machine: {pool.cut_skip}")
    victim = pool.by_name[PARTITIONED]
    others = [a for a in pool.live() if a is not victim]
    flap = "consul_serf_member_flap"
    suspect = "consul_memberlist_msg_suspect"
    traffic = ("consul_memberlist_udp_sent", "consul_memberlist_udp_received", "consul_memberlist_tcp_accept")
    failed_event = "consul_serf_member_failed"
    flaps0 = {a.name: prometheus(a, flap)[flap] for a in pool.live()}
    victim_failed0 = prometheus(victim, failed_event)[failed_event]
    suspects0 = {a.name: prometheus(a, suspect)[suspect] for a in others}

    def suspects_now() -> int:
        return sum(prometheus(a, suspect)[suspect] - suspects0[a.name] for a in pool.servers)

    with StatusPoll(pool.servers, PARTITIONED) as poll:
        cut_at = time.monotonic()
        pool.cut.cut()
        try:
            wait_until(suspects_now, timeout=15, interval=0.2, what="the cut-off client suspected by a server")
            suspected_after = time.monotonic() - cut_at
            inside0 = prometheus(victim, *traffic)
            # hold the cut until a server declares it failed, or 15 s: long enough for the others'
            # confirmations to bring the suspicion timeout to its minimum (about 6 s for 30 members)
            deadline = cut_at + 15
            while time.monotonic() < deadline and not any(s.members().get(PARTITIONED) == FAILED
                                                          for s in pool.servers):
                time.sleep(0.2)
            held = time.monotonic() - cut_at
            inside1 = prometheus(victim, *traffic)
        finally:
            pool.cut.heal()
        healed_at = time.monotonic()

        def alive_everywhere() -> bool:
            return all(a.members().get(PARTITIONED) == ALIVE for a in others)

        wait_until(alive_everywhere, timeout=45, interval=0.5, what="the healed client alive on every agent")
        back_after = time.monotonic() - healed_at
        time.sleep(3)  # keep polling: a flap storm shows right after the heal
    flaps = {a.name: prometheus(a, flap)[flap] - flaps0[a.name] for a in pool.live()}
    victim_failed = prometheus(victim, failed_event)[failed_event] - victim_failed0
    suspected_by = sum(1 for a in others if prometheus(a, suspect)[suspect] > suspects0[a.name])
    print(f"\npartition of {PARTITIONED}: suspected {suspected_after:.1f}s after the cut, cut held {held:.1f}s,"
          f" alive everywhere {back_after:.1f}s after healing; status seen by the servers: {poll.seen};"
          f" agents that suspected it: {suspected_by}/{len(others)};"
          f" serf flaps: victim {flaps[PARTITIONED]:.0f}, others total {sum(flaps.values()) - flaps[PARTITIONED]:.0f};"
          f" members the victim declared failed: {victim_failed:.0f}")

    # the cut was real: the victim kept sending gossip into it (silently dropped) and received
    # nothing, neither UDP nor a TCP connection (its counters are pumped every gossip tick, well
    # within the time from the cut to the first suspicion)
    assert inside1["consul_memberlist_udp_sent"] > inside0["consul_memberlist_udp_sent"], (inside0, inside1)
    assert inside1["consul_memberlist_udp_received"] == inside0["consul_memberlist_udp_received"], (inside0, inside1)
    assert inside1["consul_memberlist_tcp_accept"] == inside0["consul_memberlist_tcp_accept"], (inside0, inside1)
    # refuted: alive on every agent, and the victim sees the whole live pool alive
    live_names = {a.name for a in pool.live()}
    wait_until(lambda: {n for n, st in victim.members().items() if st == ALIVE} == live_names, timeout=30,
               interval=0.5, what="the healed client sees every live member alive")
    # no flap storm: each server saw at most one failure of it and back; at most one flap per agent
    for name, statuses in poll.seen.items():
        assert statuses[0] == ALIVE and statuses[-1] == ALIVE, (name, statuses)
        assert statuses.count(FAILED) <= 1, (name, statuses)
    assert all(v <= 1 for n, v in flaps.items() if n != PARTITIONED), flaps
    # the victim itself heard no one for the whole cut (at most 15 s): its suspicions of the others
    # get no confirmations, so Lifeguard runs them to the maximum, 6 x 5.9 s, and it declares none
    # of the healthy pool failed, and nothing flaps on its side either
    assert victim_failed == 0 and flaps[PARTITIONED] == 0, (victim_failed, flaps)
