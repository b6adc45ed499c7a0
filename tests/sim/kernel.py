"""The simulators' shared kernel: one seeded event heap and one clock.

Every simulated world (Raft servers in world.py, gossip members in gossip_sim.py, whole agents in
agents.py) is a `Kernel`: whatever happens is an event `(time, sequence, callable, args)` on one
heap, run one at a time on one thread, and nothing reads the wall clock, so a seed replays event
for event. Ties at the same time run in the order they were scheduled. A world picks its time unit
(the Raft and agent worlds count milliseconds, the gossip world seconds) and says so.

Randomness comes from `random.Random` instances derived from the run's seed by name
(`rng_for`), one per concern, so changing one concern's draws does not shift the others.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any


class Kernel:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.now = 0.0
        self.events = 0
        self._heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self._seq = 0

    def derive_seed(self, *parts: object) -> int:
        text = ":".join(str(p) for p in (self.seed, *parts))
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")

    def rng_for(self, name: str) -> random.Random:
        return random.Random(self.derive_seed(name))

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) at time `when` (after everything already scheduled for that time)."""
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, fn, args))

    def schedule(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self.now + delay, self._seq, fn, args))

    def run_until(self, t: float) -> None:
        """Run every event due at or before t; the clock then reads t (or later, if it was)."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= t:
            when, _, fn, args = pop(heap)
            self.now = when
            self.events += 1
            fn(*args)
        self.now = max(self.now, t)
