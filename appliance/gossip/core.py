"""The sans-IO SWIM/Lifeguard membership core (what memberlist does, without sockets or clocks).

How it works
------------
Inputs are calls with the current time: `tick(now)` runs due timers, `on_packet(src, data, now)`
handles a datagram, `on_stream(src, data, now)` answers a push-pull stream, `on_stream_reply(token,
data, now)` delivers the answer to one we opened, plus `join`, `leave` and `update_meta`. Outputs
are drained by the driver: `take_outputs()` (`Send` datagrams, `StreamRequest` exchanges) and
`take_events()` (`MemberEvent`: join, update, suspect, fail, leave). `next_deadline()` says when
`tick` must run next. Randomness comes from the injected `rng`; nothing here reads a clock.

Failure detection (SWIM §3, §4.2-4.3; Lifeguard): every probe interval the next member of a
shuffled round-robin list gets a ping (a suspect member also gets the suspicion itself, the
Lifeguard "buddy system", so it can refute at once). No ack within `probe_timeout_s` -> up to
`indirect_checks` random alive members are asked to ping it for us and to send a nack if they
get no answer. No ack by the deadline `probe_interval_s x (awareness + 1)` -> the target becomes
suspect locally and the suspicion is gossiped. Each suspicion runs a timer (`suspicion.py`) that
independent confirmations shorten; when it fires the member is declared dead. Local health
(`awareness.py`) rises with failed probes, missed nacks and refutations, stretching our deadline.

Incarnations: only a member itself raises its incarnation. Hearing itself accused (suspect or
dead at >= its incarnation) it refutes with a higher incarnation in an alive message, which
overrides the accusation everywhere. Precedence follows memberlist (see docs/internals/gossip.md):
alive needs a strictly higher incarnation, suspect and dead an equal or higher one, dead is
sticky, left is dead announced by the member itself.

Dissemination: every accepted change is queued once in a transmit-limited queue (`broadcast.py`)
and piggybacked on every outgoing packet and on gossip rounds to `gossip_nodes` random members
every `gossip_interval_s` (dead members stay gossip targets for `gossip_to_the_dead_time_s` so a
falsely killed member hears it and refutes). Push-pull: periodically, and on join, the full member
table is exchanged with one member over a stream and merged with the same precedence rules.

cairn departs from memberlist where the simulator showed false failures or slow healing (each
change is marked "cairn:" below and listed in docs/internals/gossip.md): another member's dead
message is a witness for our own suspicion, not a verdict; push-pull suspicions are second-hand;
a suspicion gets a last-chance probe before it kills; stale news is answered; a join is followed by
one resync push-pull.

An optional delegate (the Serf layer, `serf.py`) sees every member event, handles intent
messages, adds its own broadcasts to packets and its own state to push-pull.

Layout: this class only dispatches inputs and collects outputs. The parts, each with the
`CoreContext` they share (context.py: identity, time, timers, counters, outbox, events):
`MemberTable` (member_table.py: members and the probe order), `MemberTransitions`
(transitions.py: alive/suspect/dead/left, incarnations, refutation, suspicion timers),
`ProbeCycle` (probe.py: direct and indirect probes, awareness), `Dissemination`
(dissemination.py: the broadcast queue, piggybacking, gossip rounds) and `PushPullExchange`
(push_pull.py: anti-entropy, join, merge). `view()` is what the driver and metrics read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from appliance.gossip.awareness import Awareness
from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.config import GossipConfig
from appliance.gossip.context import CoreContext
from appliance.gossip.dissemination import Dissemination
from appliance.gossip.member_table import MemberTable
from appliance.gossip.members import Address, NodeState, Rng
from appliance.gossip.messages import (
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    JoinIntent,
    LeaveIntent,
    Message,
    Nack,
    Ping,
    QueryMessage,
    QueryResponseMessage,
    RelayMessage,
    Suspect,
    UserEvent,
    decode_packet,
)
from appliance.gossip.outputs import (  # re-exported for the driver
    CoreView,
    Delegate,
    MemberEvent,
    Output,
    Send as Send,
    StreamRequest as StreamRequest,
)
from appliance.gossip.probe import ProbeCycle
from appliance.gossip.push_pull import PushPullExchange
from appliance.gossip.transitions import MemberTransitions


class GossipCore:
    def __init__(self, name: str, addr: str, port: int, config: GossipConfig, rng: Rng, now: float,
                 meta: bytes = b"", delegate: Delegate | None = None) -> None:
        self.config = config.validate()
        self.name = name
        self.addr = addr
        self.port = port
        self.rng = rng
        self.delegate = delegate
        ctx = self.ctx = CoreContext(name, addr, port, self.config, rng, now, delegate)
        self.stats: Counter[str] = ctx.stats
        self.awareness: Awareness = ctx.awareness
        self.table = MemberTable(rng, ctx.stats)
        self.dissemination = Dissemination(ctx, self.table)
        self.rules = MemberTransitions(ctx, self.table, self.dissemination, meta)
        self.probes = ProbeCycle(ctx, self.table, self.dissemination, self.rules)
        self.push_pull = PushPullExchange(ctx, self.table, self.rules)
        self.rules.set_alive()
        self.probes.start()
        self.dissemination.start()
        self.push_pull.start()

    # ============================================================ driver API

    def tick(self, now: float) -> None:
        """Run every timer due at `now`."""
        self.ctx.run_due(now)

    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None: no timers)."""
        return self.ctx.next_deadline()

    def take_outputs(self) -> list[Output]:
        ctx = self.ctx
        out, ctx.outbox = ctx.outbox, []
        return out

    def take_events(self) -> list[MemberEvent]:
        ctx = self.ctx
        out, ctx.events = ctx.events, []
        return out

    def call_at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run `fn(arg)` from the first `tick` at or after `when` (also used by the Serf layer)."""
        self.ctx.call_at(when, fn, arg)

    def on_packet(self, src: Address, data: bytes, now: float) -> None:
        """Handle one datagram. Garbage is counted in `stats` and dropped; this never raises on input."""
        ctx = self.ctx
        ctx.now = now
        ctx.stats["packets_received"] += 1
        ctx.stats["bytes_received"] += len(data)
        try:
            messages, unknown = decode_packet(data)
        except DecodeError:
            ctx.stats["decode_errors"] += 1
            return
        ctx.stats["unknown_messages"] += unknown
        ctx.src = src
        for msg in messages:
            self._dispatch(src, msg)
        ctx.src = None

    def on_stream(self, src: Address, data: bytes, now: float) -> bytes:
        """Answer one inbound stream (push-pull); returns the reply bytes."""
        self.ctx.now = now
        return self.push_pull.answer(src, data)

    def on_stream_reply(self, token: int, data: bytes | None, now: float) -> str:
        """The reply to a `StreamRequest` (None: connection failed or deadline passed); returns why
        the delegate refused to merge the peer's state ("" when it did not)."""
        self.ctx.now = now
        return self.push_pull.on_reply(token, data)

    def join(self, addresses: list[Address], now: float) -> list[int]:
        """Start a join push-pull with each address; returns the stream tokens."""
        self.ctx.now = now
        return [self.push_pull.open(dest, join=True) for dest in addresses]

    def leave(self, now: float) -> None:
        """Announce our departure (dead about ourselves, from ourselves -> `left` everywhere).

        `leave_broadcast_done` turns true once the announcement was fully transmitted (at once
        when no other member is alive). The driver then keeps answering for a short while and
        shuts down; a core that left never rejoins.
        """
        self.ctx.now = now
        self.rules.leave()

    def update_meta(self, meta: bytes, now: float) -> None:
        """Change our metadata (Serf tags): new incarnation, alive broadcast, UPDATE events."""
        self.ctx.now = now
        self.rules.update_meta(meta)

    # ============================================================ views

    @property
    def now(self) -> float:
        """The time of the input being handled (the Serf layer sets it for its own inputs)."""
        return self.ctx.now

    @now.setter
    def now(self, value: float) -> None:
        self.ctx.now = value

    @property
    def meta(self) -> bytes:
        return self.rules.meta

    @property
    def incarnation(self) -> int:
        return self.rules.incarnation

    @property
    def broadcasts(self) -> TransmitLimitedQueue:
        return self.dissemination.queue

    @property
    def leaving(self) -> bool:
        return self.ctx.leaving

    @property
    def leave_broadcast_done(self) -> bool:
        return self.ctx.leave_broadcast_done

    def members(self) -> list[NodeState]:
        """Every member in the table (self, dead and left ones not yet purged included)."""
        return list(self.table)

    def member(self, name: str) -> NodeState | None:
        return self.table.get(name)

    def is_suspected(self, name: str) -> bool:
        return self.rules.is_suspected(name)

    def view(self) -> CoreView:
        """What the driver and metrics read (a snapshot)."""
        probe = self.probes.current
        return CoreView(
            name=self.name, incarnation=self.rules.incarnation, health_score=self.awareness.score,
            probe_target=probe.target if probe is not None else None,
            probe_seq=probe.seq if probe is not None else None,
            broadcast_queue=len(self.dissemination.queue), members=len(self.table),
            suspected=len(self.rules.suspicions), stats=dict(self.stats),
        )

    # ============================================================ inbound dispatch

    def _dispatch(self, src: Address, msg: Message) -> None:
        kind = type(msg)
        if kind is Ping:
            self.probes.handle_ping(src, cast(Ping, msg))
        elif kind is Ack:
            self.probes.handle_ack(cast(Ack, msg))
        elif kind is Nack:
            self.probes.handle_nack(cast(Nack, msg))
        elif kind is Alive:
            self.rules.alive_node(cast(Alive, msg))
        elif kind is Suspect:
            self.rules.suspect_node(cast(Suspect, msg))
        elif kind is Dead:
            self.rules.dead_node(cast(Dead, msg))
        elif kind is IndirectPing:
            self.probes.handle_indirect_ping(src, cast(IndirectPing, msg))
        elif kind is JoinIntent or kind is LeaveIntent:
            if self.delegate is not None:
                self.delegate.handle_intent(cast(JoinIntent | LeaveIntent, msg))
            else:
                self.stats["unknown_messages"] += 1
        elif kind is UserEvent:
            if self.delegate is not None:
                self.delegate.handle_user_event(cast(UserEvent, msg))
            else:
                self.stats["unknown_messages"] += 1
        elif kind is QueryMessage or kind is QueryResponseMessage or kind is RelayMessage:
            if self.delegate is not None:
                self.delegate.handle_query_message(cast(QueryMessage | QueryResponseMessage | RelayMessage, msg))
            else:
                self.stats["unknown_messages"] += 1
        else:  # StreamError in a datagram
            self.stats["unexpected_messages"] += 1
