"""The probe cycle (SWIM §3, §4.3; Lifeguard LHA-Probe): direct and indirect probes, the ack and
nack handling around them, and the awareness score they move (sans-IO).

How it works
------------
Every `probe_interval_s` the next member of the shuffled round-robin list (member_table.py) gets
a ping; a suspect member gets the suspicion in the same packet (Lifeguard's buddy system). No ack
within `probe_timeout_s`: up to `indirect_checks` random alive members are asked to ping it for
us and to send a nack if they get no answer. No ack by the deadline `probe_interval_s x
(awareness + 1)`: the target becomes suspect (transitions.py starts the suspicion timer). A
success takes 1 off our awareness score; a failure adds the missing nacks (or 1 without helpers).
Probe ticks that come while a probe runs wait for it (at most one catch-up), as memberlist's
fixed-rate ticker does.

As a helper we relay: an `indirect-ping` makes us ping the target with our own sequence number
and forward its ack to the requester, or send a nack after `nack_delay_fraction x
probe_timeout_s`. As a target we answer every ping addressed to us with an ack carrying the
delegate's payload (Serf: our network coordinate).
"""

from __future__ import annotations

from typing import Any, final

from appliance.gossip.context import CoreContext
from appliance.gossip.dissemination import Dissemination
from appliance.gossip.member_table import MemberTable
from appliance.gossip.members import Address, NodeState
from appliance.gossip.messages import Ack, IndirectPing, Nack, NodeStateKind, Ping, Suspect
from appliance.gossip.transitions import MemberTransitions, Verify

ALIVE = NodeStateKind.ALIVE


@final
class Probe:
    """One probe under way (the driver times it from its ping to its end)."""

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
class Relay:
    """We are an indirect-probe helper: forward the target's ack to the requester."""

    __slots__ = ("orig_seq", "requester", "done")

    def __init__(self, orig_seq: int, requester: Address) -> None:
        self.orig_seq = orig_seq
        self.requester = requester
        self.done = False


@final
class ProbeCycle:
    """Probing, relaying for others, and answering pings."""

    def __init__(self, ctx: CoreContext, table: MemberTable, out: Dissemination, rules: MemberTransitions) -> None:
        self.ctx = ctx
        self.table = table
        self.out = out
        self.rules = rules
        self.current: Probe | None = None
        self._pending = False
        self._tick_at = 0.0

    def start(self) -> None:
        """Schedule the first probe after a random stagger."""
        ctx = self.ctx
        self._tick_at = ctx.now + ctx.rng.random() * ctx.config.probe_interval_s
        ctx.call_at(self._tick_at, self._tick)

    # ------------------------------------------------------------------ inbound

    def handle_ping(self, src: Address, ping: Ping) -> None:
        ctx = self.ctx
        if ping.node and ping.node != ctx.name:
            ctx.stats["ping_wrong_node"] += 1
            return
        dest = (ping.source_addr, ping.source_port) if ping.source_addr else src
        payload = ctx.delegate.ack_payload() if ctx.delegate is not None else b""
        self.out.send_with_piggyback(dest, Ack(ping.seq, payload))

    def handle_indirect_ping(self, src: Address, req: IndirectPing) -> None:
        ctx = self.ctx
        requester = (req.source_addr, req.source_port) if req.source_addr else src
        seq = ctx.next_seq()
        ctx.handlers[seq] = Relay(req.seq, requester)
        self.out.send_with_piggyback((req.target_addr, req.target_port),
                                     Ping(seq, req.node, ctx.name, ctx.addr, ctx.port))
        cfg = ctx.config
        if req.nack:
            ctx.call_at(ctx.now + cfg.probe_timeout_s * cfg.nack_delay_fraction, self._relay_nack, seq)
        ctx.call_at(ctx.now + cfg.probe_timeout_s, self._relay_expire, seq)

    def handle_ack(self, ack: Ack) -> None:
        ctx = self.ctx
        handler = ctx.handlers.get(ack.seq)
        if handler is None:
            ctx.stats["acks_unexpected"] += 1
            return
        if type(handler) is Relay:
            if not handler.done:
                handler.done = True
                self.out.send_with_piggyback(handler.requester, Ack(handler.orig_seq, b""))
            return
        if type(handler) is Verify:
            handler.timer.acked = True
            return
        if type(handler) is not Probe or handler.done:
            return
        handler.done = True
        rtt = ctx.now - handler.start
        if ack.payload and ctx.delegate is not None and rtt <= ctx.config.probe_timeout_s:
            # A direct ack in time: an RTT sample for network coordinates (relayed acks carry no payload).
            ctx.delegate.notify_ping_complete(handler.target, rtt, ack.payload)
        ctx.stats["probes_ok"] += 1
        ctx.awareness.apply_delta(-1)
        self._finished(handler)

    def handle_nack(self, nack: Nack) -> None:
        handler = self.ctx.handlers.get(nack.seq)
        if type(handler) is Probe and not handler.done:
            handler.nacks += 1

    def _relay_nack(self, seq: int) -> None:
        relay = self.ctx.handlers.get(seq)
        if type(relay) is Relay and not relay.done:
            self.out.send_with_piggyback(relay.requester, Nack(relay.orig_seq))

    def _relay_expire(self, seq: int) -> None:
        handlers = self.ctx.handlers
        if type(handlers.get(seq)) is Relay:
            del handlers[seq]

    # ------------------------------------------------------------------ our probes

    def _tick(self, _: Any) -> None:
        ctx = self.ctx
        # A fixed-rate ticker: ticks missed while we were late collapse into one.
        nxt = self._tick_at + ctx.config.probe_interval_s
        self._tick_at = max(nxt, ctx.now)
        ctx.call_at(self._tick_at, self._tick)
        if ctx.leaving and ctx.leave_broadcast_done:
            return
        if self.current is not None:
            self._pending = True  # runs as soon as the current probe ends
            return
        self._probe_next()

    def _probe_next(self) -> None:
        ctx = self.ctx
        node = self.table.next_to_probe(ctx.name, ctx.now - ctx.config.gossip_to_the_dead_time_s)
        if node is not None:
            self._start_probe(node)

    def _start_probe(self, node: NodeState) -> None:
        ctx = self.ctx
        cfg = ctx.config
        seq = ctx.next_seq()
        probe = Probe(seq, node, ctx.now, ctx.now + ctx.awareness.scale_timeout(cfg.probe_interval_s))
        self.current = probe
        ctx.handlers[seq] = probe
        ctx.stats["probes"] += 1
        ping = Ping(seq, node.name, ctx.name, ctx.addr, ctx.port)
        if node.state == ALIVE:
            self.out.send_with_piggyback(node.address, ping)
        else:
            self.out.send_buddy(node, ping)
        ctx.call_at(ctx.now + cfg.probe_timeout_s, self._indirect, probe)
        ctx.call_at(probe.deadline, self._deadline, probe)

    def _indirect(self, probe: Probe) -> None:
        if probe.done or self.current is not probe:
            return
        target = self.table.get(probe.target)
        if target is None:
            return
        ctx = self.ctx
        helpers = self.table.random_members(
            ctx.config.indirect_checks,
            lambda n: n.state == ALIVE and n.name != ctx.name and n.name != probe.target,
        )
        for helper in helpers:
            req = IndirectPing(probe.seq, target.name, target.addr, target.port, True, ctx.name, ctx.addr, ctx.port)
            self.out.send_with_piggyback(helper.address, req)
        probe.expected_nacks = len(helpers)

    def _deadline(self, probe: Probe) -> None:
        if probe.done or self.current is not probe:
            return
        probe.done = True
        ctx = self.ctx
        ctx.stats["probes_failed"] += 1
        delta = probe.expected_nacks - probe.nacks if probe.expected_nacks > 0 else 1
        ctx.awareness.apply_delta(delta)
        self._finished(probe)
        self.rules.suspect_node(Suspect(probe.incarnation, probe.target, ctx.name))

    def _finished(self, probe: Probe) -> None:
        self.ctx.handlers.pop(probe.seq, None)
        if self.current is probe:
            self.current = None
            if self._pending:
                self._pending = False
                self._probe_next()
