"""A simulated network between Raft servers.

Every message gets a delay drawn from [delay_min_ms, delay_max_ms]. With `fifo` (a TCP-like
stream per link) a message never overtakes an earlier one on the same link; without it messages
overtake each other freely (reordering). Each may be lost (`loss`) or delivered twice
(`duplicate`, the copy later than the original). Partitions are sets of blocked *directed* links, so
one-way (asymmetric) cuts are as easy as full ones; a message is dropped if its link is blocked
when it is sent or when it would arrive.

In the agent world (agents.py) the same network also carries gossip between the same hosts
(`carry`: datagrams and push-pull streams), so one partition splits Raft and gossip alike.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.raft.messages import Message


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    blocked: int = 0


class SimNetwork:
    def __init__(self, rng: random.Random, schedule: Callable, deliver: Callable[[Message], None],
                 delay_min_ms: float, delay_max_ms: float, loss: float, duplicate: float,
                 now, fifo: bool = False) -> None:
        self.now = now  # now() -> current simulated time in ms
        self.fifo = fifo
        self.last_arrival: dict[tuple[str, str], float] = {}
        self.rng = rng
        self.schedule = schedule  # schedule(delay_ms, fn, *args)
        self.deliver_fn = deliver
        self.delay_min_ms = delay_min_ms
        self.delay_max_ms = delay_max_ms
        self.loss = loss
        self.duplicate = duplicate
        self.blocked: set[tuple[str, str]] = set()
        self.stats = NetStats()

    def send(self, m: Message) -> None:
        self.stats.sent += 1
        if (m.frm, m.to) in self.blocked:
            self.stats.blocked += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats.lost += 1
            return
        copies = 1
        if self.duplicate and self.rng.random() < self.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            delay = self.rng.uniform(self.delay_min_ms, self.delay_max_ms)
            if self.fifo:
                link = (m.frm, m.to)
                arrival = max(self.now() + delay, self.last_arrival.get(link, 0.0) + 0.001)
                self.last_arrival[link] = arrival
                delay = arrival - self.now()
            self.schedule(delay, self._arrive, m)

    def carry(self, src: str, dst: str, fn: Callable[..., None], *args, stream: bool = False) -> bool:
        """Another protocol's message from host src to host dst (gossip): the same blocked links,
        loss and delays as Raft messages (a `stream`, TCP, is not lost, only cut); fn(*args) runs
        on arrival. False if it was dropped."""
        self.stats.sent += 1
        if (src, dst) in self.blocked:
            self.stats.blocked += 1
            return False
        if not stream and self.loss and self.rng.random() < self.loss:
            self.stats.lost += 1
            return False
        self.schedule(self.rng.uniform(self.delay_min_ms, self.delay_max_ms), self._arrive_other, src, dst, fn, args)
        return True

    def _arrive_other(self, src: str, dst: str, fn: Callable[..., None], args: tuple) -> None:
        if (src, dst) in self.blocked:
            self.stats.blocked += 1
            return
        self.stats.delivered += 1
        fn(*args)

    def _arrive(self, m: Message) -> None:
        if (m.frm, m.to) in self.blocked:
            self.stats.blocked += 1
            return
        self.stats.delivered += 1
        self.deliver_fn(m)

    # -- partitions ----------------------------------------------------------------------------

    def cut(self, a: str, b: str, both: bool = True) -> None:
        self.blocked.add((a, b))
        if both:
            self.blocked.add((b, a))

    def split(self, side: Iterable[str], everyone: Iterable[str]) -> None:
        side = set(side)
        for a in sorted(side):
            for b in sorted(everyone):
                if b not in side:
                    self.cut(a, b)

    def heal(self) -> None:
        self.blocked.clear()
