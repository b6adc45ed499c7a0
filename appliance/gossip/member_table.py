"""The gossip core's member table: every member by name and the shuffled round-robin probe
list (SWIM §4.3), with memberlist's purge of long-dead members at each wrap (sans-IO).

How it works
------------
A member (self included) is one `NodeState` (members.py), kept in a dict by name and in the probe
list. A new member is appended and swapped with a random position, so it is probed within about
one pass. `next_to_probe` walks the list, skipping ourselves and dead or left members; at the end
of the list it forgets dead and left members whose state changed before the purge horizon
(`gossip_to_the_dead_time_s` ago) and reshuffles. What the entries' states mean and how they
change is transitions.py's business; this module only stores, orders and counts them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import cast, final

from appliance.gossip.members import NodeState, Rng, k_random_nodes
from appliance.gossip.messages import NodeStateKind, PushNode


@final
class MemberTable:
    """Members by name plus the probe order; `n` for the suspicion and retransmit formulas is
    `len(table)` (self and unpurged dead members included)."""

    __slots__ = ("nodes", "order", "probe_index", "rng", "stats")

    def __init__(self, rng: Rng, stats: Counter[str]) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.order: list[NodeState] = []  # the probe list
        self.probe_index = 0
        self.rng = rng
        self.stats = stats

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[NodeState]:
        return iter(self.nodes.values())

    def get(self, name: str) -> NodeState | None:
        return self.nodes.get(name)

    def add(self, node: NodeState) -> None:
        """Insert a new member at a random position of the probe list."""
        self.nodes[node.name] = node
        lst = self.order
        lst.append(node)
        j = self.rng.randrange(len(lst))
        lst[-1], lst[j] = lst[j], lst[-1]

    def next_to_probe(self, me: str, purge_before: float) -> NodeState | None:
        """The next member to probe (not us, not dead or left), or None when there is none; the
        walk wraps at most once per call's worth of entries, purging and reshuffling at the wrap."""
        checked = 0
        nodes = self.order
        while checked < len(nodes):
            if self.probe_index >= len(nodes):
                self._reset(purge_before)
                nodes = self.order
                self.probe_index = 0
                checked += 1
                continue
            node = nodes[self.probe_index]
            self.probe_index += 1
            if node.name == me or node.dead_or_left():
                checked += 1
                continue
            return node
        return None

    def _reset(self, purge_before: float) -> None:
        """At each wrap of the probe list: forget long-dead members, then reshuffle (SWIM §4.3)."""
        keep = []
        for node in self.order:
            if node.dead_or_left() and node.state_change < purge_before:
                del self.nodes[node.name]
                self.stats["purged"] += 1
            else:
                keep.append(node)
        self.rng.shuffle(keep)
        self.order = keep

    def random_members(self, k: int, eligible: Callable[[NodeState], bool]) -> list[NodeState]:
        """Up to k distinct eligible members at random (helpers, gossip targets, push-pull peers)."""
        return k_random_nodes(k, self.order, self.rng, eligible)

    def random_alive_peer(self, me: str) -> NodeState | None:
        peers = k_random_nodes(1, self.order, self.rng,
                               lambda n: n.state == NodeStateKind.ALIVE and n.name != me)
        return peers[0] if peers else None

    def push_rows(self) -> tuple[PushNode, ...]:
        """The table as push-pull rows, in probe-list order."""
        # Plain tuples in PushNode's field order (a PushNode is one): encoded the same, built faster.
        nodes = tuple([(n.name, n.addr, n.port, n.meta, n.incarnation, n.state) for n in self.order])
        return cast("tuple[PushNode, ...]", nodes)
