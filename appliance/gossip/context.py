"""What the parts of the gossip core share: who we are, the time, timers, counters, the outbox,
member events, sequence numbers and the handlers waiting for acks (sans-IO, no clock).

How it works
------------
`GossipCore` (core.py) builds one `CoreContext` and hands it to each part: the member table's
transitions (transitions.py), the probe cycle (probe.py), dissemination (dissemination.py) and
push-pull (push_pull.py). A part schedules work with `call_at`, sends with `send_packet`, reports
member events with `emit` and counts into `stats`; the core runs due timers on `tick` and drains
`outbox` and `events` for its driver. `leaving` and `leave_broadcast_done` are the local member's
departure, read by every periodic activity.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import Any, final

from appliance.gossip.awareness import Awareness
from appliance.gossip.config import GossipConfig
from appliance.gossip.members import Address, NodeState, Rng
from appliance.gossip.messages import encode_packet
from appliance.gossip.outputs import Delegate, EventKind, MemberEvent, Output, Send


@final
class CoreContext:
    """The state every part of one gossip core reads and writes."""

    def __init__(self, name: str, addr: str, port: int, config: GossipConfig, rng: Rng, now: float,
                 delegate: Delegate | None) -> None:
        self.config = config
        self.name = name
        self.addr = addr
        self.port = port
        self.rng = rng
        self.delegate = delegate
        self.now = now
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.stats: Counter[str] = Counter()
        self.leaving = False
        self.leave_broadcast_done = False
        self.outbox: list[Output] = []
        self.events: list[MemberEvent] = []
        # seq -> what waits for its ack: a probe, a relayed probe, or a last-chance probe.
        self.handlers: dict[int, object] = {}
        self.src: Address | None = None  # sender of the packet or stream being handled
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_seq = 0
        self._seq = 0

    # ------------------------------------------------------------------ timers

    def call_at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run `fn(arg)` from the first `run_due` at or after `when`."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn, arg))

    def run_due(self, now: float) -> None:
        self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn, arg = heapq.heappop(timers)
            fn(arg)

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    # ------------------------------------------------------------------ outputs

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        return self._seq

    def send_packet(self, dest: Address, parts: list[bytes]) -> None:
        """Queue one datagram of already-encoded messages (asserting it fits one UDP buffer)."""
        data = encode_packet(parts)
        if len(data) > self.config.udp_buffer_size:
            raise AssertionError(f"gossip packet of {len(data)} bytes exceeds udp_buffer_size")
        self.stats["packets_sent"] += 1
        self.stats["bytes_sent"] += len(data)
        self.outbox.append(Send(dest, data))

    def emit(self, kind: EventKind, node: NodeState) -> None:
        event = MemberEvent(kind, node.name, node.addr, node.port, node.meta, node.incarnation, self.now)
        self.events.append(event)
        if self.delegate is not None:
            self.delegate.notify(event)
