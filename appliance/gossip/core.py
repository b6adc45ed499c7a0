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
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import Any, cast, final

from appliance.gossip.awareness import Awareness
from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.config import GossipConfig
from appliance.gossip.members import Address, NodeState, Rng, k_random_nodes, push_pull_scale
from appliance.gossip.messages import (
    PACKET_OVERHEAD,
    Ack,
    Alive,
    Dead,
    DecodeError,
    IndirectPing,
    JoinIntent,
    LeaveIntent,
    Message,
    Nack,
    NodeStateKind,
    Ping,
    PushNode,
    PushPull,
    StreamError,
    Suspect,
    UserEvent,
    decode_packet,
    decode_stream,
    encode_message,
    encode_packet,
    encode_stream,
)
from appliance.gossip.outputs import (  # re-exported for the driver
    Delegate,
    EventKind,
    MemberEvent,
    Output,
    Send as Send,
    StreamRequest as StreamRequest,
)
from appliance.gossip.state_rules import StateRules, _Verify
from appliance.gossip.suspicion import Suspicion

ALIVE, SUSPECT, DEAD, LEFT = NodeStateKind.ALIVE, NodeStateKind.SUSPECT, NodeStateKind.DEAD, NodeStateKind.LEFT
JOIN_RESYNC_ROUNDS = 10  # gossip rounds after a join before the follow-up push-pull


# ---------------------------------------------------------------------------------- in-flight probes


@final
class _Probe:
    __slots__ = ("seq", "target", "incarnation", "start", "deadline", "expected_nacks", "nacks", "done")

    def __init__(self, seq: int, target: NodeState, start: float, deadline: float) -> None:
        self.seq = seq
        self.target = target.name
        self.incarnation = target.incarnation
        self.start = start
        self.deadline = deadline
        self.expected_nacks = 0
        self.nacks = 0
        self.done = False


@final
class _Relay:
    """We are an indirect-probe helper: forward the target's ack to the requester."""

    __slots__ = ("orig_seq", "requester", "done")

    def __init__(self, orig_seq: int, requester: Address) -> None:
        self.orig_seq = orig_seq
        self.requester = requester
        self.done = False


class GossipCore(StateRules):
    def __init__(self, name: str, addr: str, port: int, config: GossipConfig, rng: Rng, now: float,
                 meta: bytes = b"", delegate: Delegate | None = None) -> None:
        self.config = config.validate()
        self.name = name
        self.addr = addr
        self.port = port
        self.meta = meta
        self.rng = rng
        self.delegate = delegate
        self.now = now
        self.incarnation = 0
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = TransmitLimitedQueue(config.retransmit_mult)
        self.stats: Counter[str] = Counter()
        self.leaving = False
        self.leave_broadcast_done = False
        self._nodes: dict[str, NodeState] = {}
        self._node_list: list[NodeState] = []
        self._probe_index = 0
        self._suspicions: dict[str, Suspicion] = {}
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_seq = 0
        self._seq = 0
        self._handlers: dict[int, _Probe | _Relay | _Verify] = {}
        self._probe: _Probe | None = None
        self._probe_pending = False
        self._probe_tick_at = 0.0
        self._streams: dict[int, tuple[bool, Address]] = {}  # token -> (join?, peer)
        self._src: Address | None = None  # sender of the packet or stream being handled
        self._stream_token = 0
        self._outbox: list[Output] = []
        self._events: list[MemberEvent] = []
        self._set_alive()
        cfg = self.config
        self._probe_tick_at = now + rng.random() * cfg.probe_interval_s
        self.call_at(self._probe_tick_at, self._probe_tick)
        if cfg.gossip_nodes > 0:
            self.call_at(now + rng.random() * cfg.gossip_interval_s, self._gossip_tick)
        if cfg.push_pull_interval_s > 0:
            self.call_at(now + rng.random() * cfg.push_pull_interval_s, self._push_pull_tick)

    # ============================================================ driver API

    def tick(self, now: float) -> None:
        """Run every timer due at `now`."""
        self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, fn, arg = heapq.heappop(timers)
            fn(arg)

    def next_deadline(self) -> float | None:
        """When `tick` must be called next (None: no timers)."""
        return self._timers[0][0] if self._timers else None

    def take_outputs(self) -> list[Output]:
        out, self._outbox = self._outbox, []
        return out

    def take_events(self) -> list[MemberEvent]:
        out, self._events = self._events, []
        return out

    def probe_in_flight(self) -> object | None:
        """The probe under way, as an opaque token (a new one per probe): the driver times probes."""
        return self._probe

    def call_at(self, when: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run `fn(arg)` from the first `tick` at or after `when` (also used by the Serf layer)."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, fn, arg))

    def on_packet(self, src: Address, data: bytes, now: float) -> None:
        """Handle one datagram. Garbage is counted in `stats` and dropped; this never raises on input."""
        self.now = now
        self.stats["packets_received"] += 1
        self.stats["bytes_received"] += len(data)
        try:
            messages, unknown = decode_packet(data)
        except DecodeError:
            self.stats["decode_errors"] += 1
            return
        self.stats["unknown_messages"] += unknown
        self._src = src
        for msg in messages:
            self._dispatch(src, msg)
        self._src = None

    def on_stream(self, src: Address, data: bytes, now: float) -> bytes:
        """Answer one inbound stream (push-pull); returns the reply bytes."""
        self.now = now
        self.stats["streams_received"] += 1
        try:
            msg = decode_stream(data)
        except DecodeError as exc:
            self.stats["decode_errors"] += 1
            return encode_stream(StreamError(f"bad request: {exc.reason}"))
        if type(msg) is not PushPull or msg.reply:
            self.stats["stream_unexpected"] += 1
            return encode_stream(StreamError("unexpected message"))
        reply = encode_stream(PushPull(msg.join, True, self._local_push_nodes(), self._delegate_state()))
        self._src = src
        self._merge_remote(msg)
        self._src = None
        return reply

    def on_stream_reply(self, token: int, data: bytes | None, now: float) -> None:
        """The reply to a `StreamRequest` (None: connection failed or deadline passed)."""
        self.now = now
        stream = self._streams.pop(token, None)
        if stream is None:
            return
        join, peer = stream
        ok = False
        if data is None:
            self.stats["push_pull_failed"] += 1
        else:
            try:
                msg = decode_stream(data)
            except DecodeError:
                self.stats["decode_errors"] += 1
                msg = None
            if type(msg) is PushPull and msg.reply:
                self._src = peer
                self._merge_remote(msg)
                self._src = None
                ok = True
                if join:
                    self.call_at(self.now + JOIN_RESYNC_ROUNDS * self.config.gossip_interval_s, self._join_resync)
            elif msg is not None:
                self.stats["push_pull_failed"] += 1
        if join and self.delegate is not None:
            self.delegate.on_join_result(ok)

    def join(self, addresses: list[Address], now: float) -> list[int]:
        """Start a join push-pull with each address; returns the stream tokens."""
        self.now = now
        return [self._start_push_pull(dest, join=True) for dest in addresses]

    def leave(self, now: float) -> None:
        """Announce our departure (dead about ourselves, from ourselves -> `left` everywhere).

        `leave_broadcast_done` turns true once the announcement was fully transmitted (at once
        when no other member is alive). The driver then keeps answering for a short while and
        shuts down; a core that left never rejoins.
        """
        self.now = now
        if self.leaving:
            return
        self.leaving = True
        me = self._nodes[self.name]
        if not any(n.state == ALIVE and n.name != self.name for n in self._node_list):
            self.leave_broadcast_done = True
        self._dead_node(Dead(me.incarnation, self.name, self.name))

    def update_meta(self, meta: bytes, now: float) -> None:
        """Change our metadata (Serf tags): new incarnation, alive broadcast, UPDATE events."""
        self.now = now
        self.meta = meta
        self.incarnation += 1
        self._alive_node(Alive(self.incarnation, self.name, self.addr, self.port, meta), bootstrap=True)

    # ============================================================ views

    def members(self) -> list[NodeState]:
        """Every member in the table (self, dead and left ones not yet purged included)."""
        return list(self._nodes.values())

    def member(self, name: str) -> NodeState | None:
        return self._nodes.get(name)

    def is_suspected(self, name: str) -> bool:
        return name in self._suspicions

    # ============================================================ sending

    def _emit(self, kind: EventKind, node: NodeState) -> None:
        event = MemberEvent(kind, node.name, node.addr, node.port, node.meta, node.incarnation, self.now)
        self._events.append(event)
        if self.delegate is not None:
            self.delegate.notify(event)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF_FFFF
        return self._seq

    def _send_parts(self, dest: Address, parts: list[bytes]) -> None:
        data = encode_packet(parts)
        if len(data) > self.config.udp_buffer_size:
            raise AssertionError(f"gossip packet of {len(data)} bytes exceeds udp_buffer_size")
        self.stats["packets_sent"] += 1
        self.stats["bytes_sent"] += len(data)
        self._outbox.append(Send(dest, data))

    def _send_with_piggyback(self, dest: Address, msg: Message) -> None:
        first = encode_message(msg)
        avail = self.config.udp_buffer_size - PACKET_OVERHEAD - len(first)
        self._send_parts(dest, [first, *self._get_broadcasts(avail)])

    def _has_broadcasts(self) -> bool:
        return len(self.broadcasts) > 0 or (self.delegate is not None and self.delegate.has_broadcasts())

    def _get_broadcasts(self, limit: int) -> list[bytes]:
        parts = self.broadcasts.get_broadcasts(0, limit, len(self._nodes))
        if self.delegate is not None:
            left = limit - sum(len(p) for p in parts)
            if left > 8:
                parts.extend(self.delegate.get_broadcasts(left))
        return parts

    def _queue_broadcast(self, node: str, msg: Message, on_finished: Callable[[], None] | None = None) -> None:
        self.broadcasts.queue(encode_message(msg), key=node, on_finished=on_finished)

    # ============================================================ inbound dispatch

    def _dispatch(self, src: Address, msg: Message) -> None:
        kind = type(msg)
        if kind is Ping:
            self._handle_ping(src, cast(Ping, msg))
        elif kind is Ack:
            self._handle_ack(cast(Ack, msg))
        elif kind is Nack:
            self._handle_nack(cast(Nack, msg))
        elif kind is Alive:
            self._alive_node(cast(Alive, msg))
        elif kind is Suspect:
            self._suspect_node(cast(Suspect, msg))
        elif kind is Dead:
            self._dead_node(cast(Dead, msg))
        elif kind is IndirectPing:
            self._handle_indirect_ping(src, cast(IndirectPing, msg))
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
        else:  # StreamError in a datagram
            self.stats["unexpected_messages"] += 1

    def _handle_ping(self, src: Address, ping: Ping) -> None:
        if ping.node and ping.node != self.name:
            self.stats["ping_wrong_node"] += 1
            return
        dest = (ping.source_addr, ping.source_port) if ping.source_addr else src
        payload = self.delegate.ack_payload() if self.delegate is not None else b""
        self._send_with_piggyback(dest, Ack(ping.seq, payload))

    def _handle_indirect_ping(self, src: Address, req: IndirectPing) -> None:
        requester = (req.source_addr, req.source_port) if req.source_addr else src
        seq = self._next_seq()
        relay = _Relay(req.seq, requester)
        self._handlers[seq] = relay
        self._send_with_piggyback((req.target_addr, req.target_port),
                                  Ping(seq, req.node, self.name, self.addr, self.port))
        cfg = self.config
        if req.nack:
            self.call_at(self.now + cfg.probe_timeout_s * cfg.nack_delay_fraction, self._relay_nack, seq)
        self.call_at(self.now + cfg.probe_timeout_s, self._relay_expire, seq)

    def _relay_nack(self, seq: int) -> None:
        relay = self._handlers.get(seq)
        if type(relay) is _Relay and not relay.done:
            self._send_with_piggyback(relay.requester, Nack(relay.orig_seq))

    def _relay_expire(self, seq: int) -> None:
        handler = self._handlers.get(seq)
        if type(handler) is _Relay:
            del self._handlers[seq]

    def _handle_ack(self, ack: Ack) -> None:
        handler = self._handlers.get(ack.seq)
        if handler is None:
            self.stats["acks_unexpected"] += 1
            return
        if type(handler) is _Relay:
            if not handler.done:
                handler.done = True
                self._send_with_piggyback(handler.requester, Ack(handler.orig_seq, b""))
            return
        if type(handler) is _Verify:
            handler.timer.acked = True
            return
        if handler.done:
            return
        handler.done = True
        rtt = self.now - handler.start
        if ack.payload and self.delegate is not None and rtt <= self.config.probe_timeout_s:
            # A direct ack in time: an RTT sample for network coordinates (relayed acks carry no payload).
            self.delegate.notify_ping_complete(handler.target, rtt, ack.payload)
        self.stats["probes_ok"] += 1
        self.awareness.apply_delta(-1)
        self._probe_finished(handler)

    def _handle_nack(self, nack: Nack) -> None:
        handler = self._handlers.get(nack.seq)
        if type(handler) is _Probe and not handler.done:
            handler.nacks += 1

    # ============================================================ probe cycle

    def _probe_tick(self, _: Any) -> None:
        # A fixed-rate ticker: ticks missed while we were late collapse into one.
        nxt = self._probe_tick_at + self.config.probe_interval_s
        self._probe_tick_at = max(nxt, self.now)
        self.call_at(self._probe_tick_at, self._probe_tick)
        if self.leaving and self.leave_broadcast_done:
            return
        if self._probe is not None:
            self._probe_pending = True  # runs as soon as the current probe ends
            return
        self._probe_next()

    def _probe_next(self) -> None:
        checked = 0
        nodes = self._node_list
        while checked < len(nodes):
            if self._probe_index >= len(nodes):
                self._reset_nodes()
                nodes = self._node_list
                self._probe_index = 0
                checked += 1
                continue
            node = nodes[self._probe_index]
            self._probe_index += 1
            if node.name == self.name or node.dead_or_left():
                checked += 1
                continue
            self._start_probe(node)
            return

    def _reset_nodes(self) -> None:
        """At each wrap of the probe list: forget long-dead members, then reshuffle (SWIM §4.3)."""
        horizon = self.now - self.config.gossip_to_the_dead_time_s
        keep = []
        for node in self._node_list:
            if node.dead_or_left() and node.state_change < horizon:
                del self._nodes[node.name]
                self.stats["purged"] += 1
            else:
                keep.append(node)
        self.rng.shuffle(keep)
        self._node_list = keep

    def _start_probe(self, node: NodeState) -> None:
        cfg = self.config
        seq = self._next_seq()
        probe = _Probe(seq, node, self.now, self.now + self.awareness.scale_timeout(cfg.probe_interval_s))
        self._probe = probe
        self._handlers[seq] = probe
        self.stats["probes"] += 1
        ping = Ping(seq, node.name, self.name, self.addr, self.port)
        if node.state == ALIVE:
            self._send_with_piggyback(node.address, ping)
        else:
            self._send_buddy(node, ping)
        self.call_at(self.now + cfg.probe_timeout_s, self._probe_indirect, probe)
        self.call_at(probe.deadline, self._probe_deadline, probe)

    def _send_buddy(self, node: NodeState, ping: Ping) -> None:
        """Lifeguard buddy system: a suspect member gets the suspicion with the ping and nothing
        else. cairn puts the suspicion first, so the refutation it causes is already queued when
        the ping is answered and rides back on the ack."""
        suspect = Suspect(node.incarnation, node.name, self.name)
        self._send_parts(node.address, [encode_message(suspect), encode_message(ping)])

    def _probe_indirect(self, probe: _Probe) -> None:
        if probe.done or self._probe is not probe:
            return
        target = self._nodes.get(probe.target)
        if target is None:
            return
        helpers = k_random_nodes(
            self.config.indirect_checks, self._node_list, self.rng,
            lambda n: n.state == ALIVE and n.name != self.name and n.name != probe.target,
        )
        for helper in helpers:
            req = IndirectPing(probe.seq, target.name, target.addr, target.port, True,
                               self.name, self.addr, self.port)
            self._send_with_piggyback(helper.address, req)
        probe.expected_nacks = len(helpers)

    def _probe_deadline(self, probe: _Probe) -> None:
        if probe.done or self._probe is not probe:
            return
        probe.done = True
        self.stats["probes_failed"] += 1
        delta = probe.expected_nacks - probe.nacks if probe.expected_nacks > 0 else 1
        self.awareness.apply_delta(delta)
        self._probe_finished(probe)
        self._suspect_node(Suspect(probe.incarnation, probe.target, self.name))

    def _probe_finished(self, probe: _Probe) -> None:
        self._handlers.pop(probe.seq, None)
        if self._probe is probe:
            self._probe = None
            if self._probe_pending:
                self._probe_pending = False
                self._probe_next()

    # ============================================================ gossip and push-pull

    def _gossip_tick(self, _: Any) -> None:
        cfg = self.config
        self.call_at(self.now + cfg.gossip_interval_s, self._gossip_tick)
        if self.leaving and self.leave_broadcast_done:
            return
        if not self._has_broadcasts():
            return
        horizon = self.now - cfg.gossip_to_the_dead_time_s
        me = self.name

        def eligible(n: NodeState) -> bool:
            if n.name == me:
                return False
            if n.state == ALIVE or n.state == SUSPECT:
                return True
            return n.state == DEAD and n.state_change >= horizon

        for target in k_random_nodes(cfg.gossip_nodes, self._node_list, self.rng, eligible):
            parts = self._get_broadcasts(cfg.udp_buffer_size - PACKET_OVERHEAD)
            if not parts:
                return
            self.stats["gossip_packets"] += 1
            self._send_parts(target.address, parts)

    def _push_pull_tick(self, _: Any) -> None:
        cfg = self.config
        self.call_at(self.now + push_pull_scale(cfg.push_pull_interval_s, len(self._nodes)), self._push_pull_tick)
        if self.leaving:
            return
        peers = k_random_nodes(1, self._node_list, self.rng, lambda n: n.state == ALIVE and n.name != self.name)
        if peers:
            self._start_push_pull(peers[0].address, join=False)

    def _join_resync(self, _: Any) -> None:
        """cairn: one extra push-pull with a random member shortly after a join. News that was
        still spreading when our contact answered (other members joining at the same time) would
        otherwise reach us only at the next periodic push-pull, up to minutes later."""
        if self.leaving:
            return
        peers = k_random_nodes(1, self._node_list, self.rng, lambda n: n.state == ALIVE and n.name != self.name)
        if peers:
            self.stats["join_resyncs"] += 1
            self._start_push_pull(peers[0].address, join=False)

    def _start_push_pull(self, dest: Address, join: bool) -> int:
        self._stream_token += 1
        token = self._stream_token
        self._streams[token] = (join, dest)
        data = encode_stream(PushPull(join, False, self._local_push_nodes(), self._delegate_state()))
        self.stats["push_pulls"] += 1
        self._outbox.append(StreamRequest(token, dest, data, self.now + self.config.tcp_timeout_s))
        return token

    def _local_push_nodes(self) -> tuple[PushNode, ...]:
        # Plain tuples in PushNode's field order (a PushNode is one): encoded the same, built faster.
        nodes = tuple([(n.name, n.addr, n.port, n.meta, n.incarnation, n.state) for n in self._node_list])
        return cast("tuple[PushNode, ...]", nodes)

    def _delegate_state(self) -> bytes:
        return self.delegate.local_state() if self.delegate is not None else b""
