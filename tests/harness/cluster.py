"""A cluster of real agent processes: servers that bootstrap together and client agents, all
joined with `-retry-join` on the servers' LAN gossip addresses, in one datacenter.

    with Cluster(tmp_path, servers=3, clients=2).start() as cluster:
        leader = cluster.wait_leader()        # the Agent every live server names as leader
        assert leader.kv_put("k", "v")
        leader.stop(kill=True)                # kill -9
        cluster.wait_leader(other_than=leader)
        leader.start()                        # back from its data dir

Two clusters with different `datacenter` names make a WAN federation with `join_wan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .agent import Agent
from .net import wait_until

FAST_RAFT = "performance { raft_multiplier = 1 }"


def server_args(expect: int, *hcl: str) -> list[str]:
    """The flags of a server among `expect` (Raft at multiplier 1, as the timing tests assume)."""
    args = ["-server", "-bootstrap-expect", str(expect), "-hcl", FAST_RAFT]
    for text in hcl:
        args += ["-hcl", text]
    return args


def one_leader(servers: Sequence[Agent]) -> str | None:
    """The leader address every given server names, if they all name the same one."""
    leaders = {s.leader() for s in servers}
    return leaders.pop() if len(leaders) == 1 and "" not in leaders else None


class Cluster:
    """`servers` servers named s1.. and `clients` client agents named c1.. (with `prefix`), all
    joined to the servers. Extra flags for every server or client go in `server_args` and
    `client_args`; `hcl` text goes to both."""

    def __init__(self, tmp_path: Path, servers: int = 3, clients: int = 0, *, expect: int | None = None,
                 datacenter: str = "", hcl: Sequence[str] = (), server_extra: Sequence[str] = (),
                 client_extra: Sequence[str] = (), prefix: str = "") -> None:
        self.datacenter = datacenter
        hcl_args = [a for text in hcl for a in ("-hcl", text)]
        self.servers = [Agent(tmp_path, f"{prefix}s{i}", *server_args(expect or servers), *hcl_args, *server_extra,
                              datacenter=datacenter) for i in range(1, servers + 1)]
        self.clients = [Agent(tmp_path, f"{prefix}c{i}", *hcl_args, *client_extra, datacenter=datacenter)
                        for i in range(1, clients + 1)]
        self.join = [s.lan_addr for s in self.servers]
        for agent in self.agents:
            agent.join = list(self.join)

    @property
    def agents(self) -> list[Agent]:
        return [*self.servers, *self.clients]

    def __getitem__(self, name: str) -> Agent:
        return next(a for a in self.agents if a.name == name)

    def start(self) -> Cluster:
        for agent in self.agents:
            agent.start()
        return self

    def stop(self) -> None:
        for agent in reversed(self.agents):
            agent.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- leader lookup ------------------------------------------------------------------------------

    def live_servers(self) -> list[Agent]:
        return [s for s in self.servers if s.alive()]

    def by_server_addr(self, address: str) -> Agent:
        return next(s for s in self.servers if s.server_addr == address)

    def leader(self) -> Agent | None:
        """The server every live server names as leader, if they agree."""
        address = one_leader(self.live_servers())
        return self.by_server_addr(address) if address else None

    def wait_leader(self, timeout: float = 30, other_than: Agent | None = None) -> Agent:
        """Until every live server names the same leader (not `other_than`); returns it."""
        def agreed() -> Agent | None:
            lead = self.leader()
            return lead if lead is not None and lead is not other_than else None

        found: Agent = wait_until(agreed, timeout=timeout, what="one leader named by every live server")
        return found

    # -- WAN ----------------------------------------------------------------------------------------

    def join_wan(self, other: Cluster) -> None:
        """Join this cluster's servers to `other`'s over the WAN pool."""
        for server in self.servers:
            done = server.cli("join", "-wan", other.servers[0].wan_addr)
            assert done.returncode == 0, done.stderr
