"""Member records and the pure helpers around the member table.

How it works: every member (self included) is one `NodeState`: name, address, metadata (Serf
tags), incarnation and SWIM state (alive, suspect, dead, left) with the time it last changed. The
core keeps them in a dict by name and in a probe list that it walks round robin and reshuffles at
each wrap (SWIM §4.3). `k_random_nodes` picks helpers and gossip targets; `push_pull_scale` stretches
the anti-entropy period for large clusters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from appliance.gossip.messages import NodeStateKind

Address = tuple[str, int]

PUSH_PULL_SCALE_THRESHOLD = 32  # memberlist pushPullScaleThreshold


class Rng(Protocol):
    """The subset of `random.Random` the gossip core uses (injected; seeded in tests)."""

    def random(self) -> float: ...

    def randrange(self, stop: int, /) -> int: ...  # positional, as random.Random's first parameter is `start`

    def shuffle(self, x: list[Any]) -> None: ...


class NodeState:
    __slots__ = ("name", "addr", "port", "meta", "incarnation", "state", "state_change", "accused_at")

    def __init__(self, name: str, addr: str, port: int, meta: bytes, incarnation: int,
                 state: NodeStateKind, state_change: float) -> None:
        self.name = name
        self.addr = addr
        self.port = port
        self.meta = meta
        self.incarnation = incarnation
        self.state = state
        self.state_change = state_change
        self.accused_at = float("-inf")  # last direct accusation of it, or correction about it (rate limit)

    @property
    def address(self) -> Address:
        return (self.addr, self.port)

    def dead_or_left(self) -> bool:
        return self.state == NodeStateKind.DEAD or self.state == NodeStateKind.LEFT

    def __repr__(self) -> str:
        return f"NodeState({self.name!r}, {self.state.name}, inc={self.incarnation})"


def k_random_nodes(k: int, nodes: list[NodeState], rng: Rng, eligible: Callable[[NodeState], bool]) -> list[NodeState]:
    """Up to k distinct eligible members chosen at random.

    Small lists (fewer than 3k entries) are shuffled and scanned in full, so the only eligible
    helper of a 3-member cluster is always found (memberlist fix #350); larger lists use at most
    3 x len random draws.
    """
    n = len(nodes)
    if k <= 0 or n == 0:
        return []
    if n < 3 * k:
        pool = list(nodes)
        rng.shuffle(pool)
        return [node for node in pool if eligible(node)][:k]
    picked: list[NodeState] = []
    seen: set[str] = set()
    for _ in range(3 * n):
        node = nodes[rng.randrange(n)]
        if node.name in seen or not eligible(node):
            continue
        seen.add(node.name)
        picked.append(node)
        if len(picked) >= k:
            break
    return picked


def push_pull_scale(interval_s: float, n: int) -> float:
    """Push-pull period for n members: unchanged up to 32, then x (ceil(log2 n - log2 32) + 1)."""
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval_s
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval_s * multiplier
