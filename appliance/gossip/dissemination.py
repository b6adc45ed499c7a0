"""Dissemination (SWIM §4.1): the broadcast queue piggybacked on every packet and the gossip
rounds that carry it to random members (sans-IO).

How it works
------------
Every accepted change about member X is queued once, as encoded bytes keyed by X, in the
transmit-limited queue (broadcast.py); the Serf layer's intents and user events come from the
delegate's own queues after ours. `send_with_piggyback` fills the room left in a packet after its
first message; every `gossip_interval_s` a round sends what is queued to `gossip_nodes` random
alive or suspect members, plus dead members for `gossip_to_the_dead_time_s` so a falsely accused
member hears it and refutes. A round with nothing queued sends nothing. `send_buddy` is
Lifeguard's buddy packet: the suspicion and the ping, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, final

from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.context import CoreContext
from appliance.gossip.member_table import MemberTable
from appliance.gossip.members import Address, NodeState
from appliance.gossip.messages import PACKET_OVERHEAD, Message, NodeStateKind, Ping, Suspect, encode_message

ALIVE, SUSPECT, DEAD = NodeStateKind.ALIVE, NodeStateKind.SUSPECT, NodeStateKind.DEAD


@final
class Dissemination:
    """The broadcast queue, piggybacking and gossip rounds of one core."""

    def __init__(self, ctx: CoreContext, table: MemberTable) -> None:
        self.ctx = ctx
        self.table = table
        self.queue = TransmitLimitedQueue(ctx.config.retransmit_mult)

    def start(self) -> None:
        """Schedule the first gossip round after a random stagger (none when `gossip_nodes` is 0)."""
        cfg = self.ctx.config
        if cfg.gossip_nodes > 0:
            self.ctx.call_at(self.ctx.now + self.ctx.rng.random() * cfg.gossip_interval_s, self._gossip_tick)

    # ------------------------------------------------------------------ queueing and piggybacking

    def queue_broadcast(self, node: str, msg: Message, on_finished: Callable[[], None] | None = None) -> None:
        self.queue.queue(encode_message(msg), key=node, on_finished=on_finished)

    def has_broadcasts(self) -> bool:
        delegate = self.ctx.delegate
        return len(self.queue) > 0 or (delegate is not None and delegate.has_broadcasts())

    def get_broadcasts(self, limit: int) -> list[bytes]:
        parts = self.queue.get_broadcasts(0, limit, len(self.table))
        delegate = self.ctx.delegate
        if delegate is not None:
            left = limit - sum(len(p) for p in parts)
            if left > 8:
                parts.extend(delegate.get_broadcasts(left))
        return parts

    def send_with_piggyback(self, dest: Address, msg: Message) -> None:
        first = encode_message(msg)
        avail = self.ctx.config.udp_buffer_size - PACKET_OVERHEAD - len(first)
        self.ctx.send_packet(dest, [first, *self.get_broadcasts(avail)])

    def send_buddy(self, node: NodeState, ping: Ping) -> None:
        """Lifeguard buddy system: a suspect member gets the suspicion with the ping and nothing
        else. cairn puts the suspicion first, so the refutation it causes is already queued when
        the ping is answered and rides back on the ack."""
        suspect = Suspect(node.incarnation, node.name, self.ctx.name)
        self.ctx.send_packet(node.address, [encode_message(suspect), encode_message(ping)])

    # ------------------------------------------------------------------ gossip rounds

    def _gossip_tick(self, _: Any) -> None:
        ctx = self.ctx
        cfg = ctx.config
        ctx.call_at(ctx.now + cfg.gossip_interval_s, self._gossip_tick)
        if ctx.leaving and ctx.leave_broadcast_done:
            return
        if not self.has_broadcasts():
            return
        horizon = ctx.now - cfg.gossip_to_the_dead_time_s
        me = ctx.name

        def eligible(n: NodeState) -> bool:
            if n.name == me:
                return False
            if n.state == ALIVE or n.state == SUSPECT:
                return True
            return n.state == DEAD and n.state_change >= horizon

        for target in self.table.random_members(cfg.gossip_nodes, eligible):
            parts = self.get_broadcasts(cfg.udp_buffer_size - PACKET_OVERHEAD)
            if not parts:
                return
            ctx.stats["gossip_packets"] += 1
            ctx.send_packet(target.address, parts)
