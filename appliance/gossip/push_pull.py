"""Push-pull (anti-entropy) and join: the whole member table exchanged with one member over a
stream, and the merge of a remote table into ours (memberlist's `mergeState`; sans-IO).

How it works
------------
Every `push_pull_interval_s` (after a random stagger, and scaled up above 32 members by
`push_pull_scale`), and on `join`, we open a stream to one member with our table and the
delegate's state (Serf's clocks, intents and user events); the member answers with its own. Both
sides merge the other's table with the normal rules (transitions.py): alive as alive, left as left,
dead or suspect as a second-hand suspicion (cairn: it starts a local timer only, never confirms
one, is not gossiped, and is sent to the accused directly). Ten gossip rounds after a successful
join we push-pull once more with a random member (cairn), so news still spreading when our contact
answered reaches us without waiting for the next period.
"""

from __future__ import annotations

from typing import Any, final

from appliance.gossip.context import CoreContext
from appliance.gossip.member_table import MemberTable
from appliance.gossip.members import Address, push_pull_scale
from appliance.gossip.messages import (
    Alive,
    Dead,
    DecodeError,
    NodeStateKind,
    PushPull,
    StreamError,
    Suspect,
    decode_stream,
    encode_stream,
)
from appliance.gossip.outputs import StreamRequest
from appliance.gossip.transitions import MemberTransitions

ALIVE, SUSPECT, LEFT = NodeStateKind.ALIVE, NodeStateKind.SUSPECT, NodeStateKind.LEFT
JOIN_RESYNC_ROUNDS = 10  # gossip rounds after a join before the follow-up push-pull


@final
class PushPullExchange:
    """Our push-pull streams in flight, the answers to others', and the merge."""

    def __init__(self, ctx: CoreContext, table: MemberTable, rules: MemberTransitions) -> None:
        self.ctx = ctx
        self.table = table
        self.rules = rules
        self.streams: dict[int, tuple[bool, Address]] = {}  # token -> (join?, peer)
        self._token = 0

    def start(self) -> None:
        """Schedule the first periodic push-pull after a random stagger (none at interval 0)."""
        ctx = self.ctx
        interval = ctx.config.push_pull_interval_s
        if interval > 0:
            ctx.call_at(ctx.now + ctx.rng.random() * interval, self._tick)

    # ------------------------------------------------------------------ streams

    def open(self, dest: Address, join: bool) -> int:
        """Send our state to `dest` over a stream; returns the stream's token."""
        ctx = self.ctx
        self._token += 1
        token = self._token
        self.streams[token] = (join, dest)
        data = encode_stream(PushPull(join, False, self.table.push_rows(), self._delegate_state()))
        ctx.stats["push_pulls"] += 1
        ctx.outbox.append(StreamRequest(token, dest, data, ctx.now + ctx.config.tcp_timeout_s))
        return token

    def answer(self, src: Address, data: bytes) -> bytes:
        """Answer one inbound stream with our state, then merge the caller's."""
        ctx = self.ctx
        ctx.stats["streams_received"] += 1
        try:
            msg = decode_stream(data)
        except DecodeError as exc:
            ctx.stats["decode_errors"] += 1
            return encode_stream(StreamError(f"bad request: {exc.reason}"))
        if type(msg) is not PushPull or msg.reply:
            ctx.stats["stream_unexpected"] += 1
            return encode_stream(StreamError("unexpected message"))
        reply = encode_stream(PushPull(msg.join, True, self.table.push_rows(), self._delegate_state()))
        error = self._refusal(msg)
        if error:  # memberlist answers first, then refuses to merge
            ctx.stats["push_pull_refused"] += 1
            if ctx.delegate is not None:
                ctx.delegate.log("memberlist", "error",
                                 f"memberlist: Failed push/pull merge: {error} from={src[0]}:{src[1]}")
            return reply
        self._merge_from(src, msg)
        return reply

    def _refusal(self, msg: PushPull) -> str:
        delegate = self.ctx.delegate
        return delegate.check_merge(msg.nodes) if delegate is not None else ""

    def on_reply(self, token: int, data: bytes | None) -> str:
        """The answer to a stream we opened (None: it failed or timed out); returns the merge
        delegate's refusal ("" if none)."""
        ctx = self.ctx
        stream = self.streams.pop(token, None)
        if stream is None:
            return ""
        join, peer = stream
        ok = False
        error = ""
        if data is None:
            ctx.stats["push_pull_failed"] += 1
        else:
            try:
                msg = decode_stream(data)
            except DecodeError:
                ctx.stats["decode_errors"] += 1
                msg = None
            if type(msg) is PushPull and msg.reply:
                error = self._refusal(msg)
            if type(msg) is PushPull and msg.reply and error:
                ctx.stats["push_pull_refused"] += 1
                if not join and ctx.delegate is not None:  # a join's error goes back to its caller
                    ctx.delegate.log("memberlist", "error",
                                     f"memberlist: Push/Pull with {peer[0]}:{peer[1]} failed: {error}")
            elif type(msg) is PushPull and msg.reply:
                self._merge_from(peer, msg)
                ok = True
                if join:
                    ctx.call_at(ctx.now + JOIN_RESYNC_ROUNDS * ctx.config.gossip_interval_s, self._join_resync)
            elif msg is not None:
                ctx.stats["push_pull_failed"] += 1
        if join and ctx.delegate is not None:
            ctx.delegate.on_join_result(ok)
        return error

    # ------------------------------------------------------------------ merge

    def _merge_from(self, src: Address, msg: PushPull) -> None:
        ctx = self.ctx
        ctx.src = src
        self.merge(msg)
        ctx.src = None

    def merge(self, msg: PushPull) -> None:
        """Apply a remote table with the normal rules: a remote 'dead' only makes us suspect."""
        me = self.ctx.name
        known = self.table.nodes
        rules = self.rules
        for n in msg.nodes:
            state = n.state
            if state == ALIVE:
                local = known.get(n.name)
                if (local is not None and n.incarnation <= local.incarnation and n.name != me
                        and (local.state == ALIVE or local.state == SUSPECT)
                        and local.port == n.port and local.addr == n.addr):
                    continue  # nothing new (what alive_node would conclude; most entries of a table)
                rules.alive_node(Alive(n.incarnation, n.name, n.addr, n.port, n.meta))
            elif state == LEFT:
                rules.dead_node(Dead(n.incarnation, n.name, n.name))
            else:
                rules.suspect_node(Suspect(n.incarnation, n.name, me), from_push_pull=True)
        delegate = self.ctx.delegate
        if delegate is not None and msg.user_state:
            delegate.merge_remote_state(msg.user_state, msg.join)

    def _delegate_state(self) -> bytes:
        delegate = self.ctx.delegate
        return delegate.local_state() if delegate is not None else b""

    # ------------------------------------------------------------------ periodic

    def _tick(self, _: Any) -> None:
        ctx = self.ctx
        ctx.call_at(ctx.now + push_pull_scale(ctx.config.push_pull_interval_s, len(self.table)), self._tick)
        if ctx.leaving:
            return
        peer = self.table.random_alive_peer(ctx.name)
        if peer is not None:
            self.open(peer.address, join=False)

    def _join_resync(self, _: Any) -> None:
        """cairn: one extra push-pull with a random member shortly after a join. News that was
        still spreading when our contact answered (other members joining at the same time) would
        otherwise reach us only at the next periodic push-pull, up to minutes later."""
        ctx = self.ctx
        if ctx.leaving:
            return
        peer = self.table.random_alive_peer(ctx.name)
        if peer is not None:
            ctx.stats["join_resyncs"] += 1
            self.open(peer.address, join=False)
