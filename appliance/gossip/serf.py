"""The Serf layer over the SWIM core: member status, tags, Lamport-ordered join/leave intents, reap.

How it works: `Serf` owns a `GossipCore` and plugs itself in as its delegate, so a driver talks
to `Serf` only (same `tick`/`on_packet`/`on_stream`/`take_outputs` surface, plus `take_events`
for Serf member events). SWIM alone cannot tell a crash from a graceful exit reliably across
reorderings, so Serf adds intents carrying a Lamport time: a leaving member first broadcasts
`leave(LTime)`, which moves it to `leaving` everywhere; when the core then reports it gone, a
`leaving` member becomes `left` (member-leave) while an `alive` one becomes `failed`
(member-failed). A late intent still turns `failed` into `left`. Each member keeps the LTime of
the last intent accepted for it (`status_ltime`); older or equal intents are ignored, so two leave
intents cannot echo forever. Intents about members not known yet are buffered for
`recent_intent_timeout_s`. Failed members are retried every `reconnect_interval_s` (with
probability failed/alive, so the cluster as a whole makes about one attempt per failed member)
and reaped after `reconnect_timeout_s`; left members after `tombstone_timeout_s`.

Graceful `leave(now)`: broadcast the intent (wait until fully transmitted or
`broadcast_timeout_s`), then the core's own departure (same wait), then keep answering probes for
`leave_propagate_delay_s`; `has_left` turns true and the driver may shut down.

User events: `user_event(name, payload, coalesce)` stamps the event with a second Lamport clock
(the event clock), delivers it locally and broadcasts it through its own transmit-limited queue.
Receivers pass it through the `EventBuffer` (user_events.py: 512 LTime slots): a duplicate or an
event older than `event clock - 512` is dropped, anything else is delivered once (a USER
`SerfEvent`) and re-broadcast. The whole ring travels in push-pull state,
so a member that joins late (or missed the gossip) still gets the recent events; a join with
`ignore_old` raises the minimum event time to the remote clock instead. The size of name plus
payload is limited to `user_event_size_limit` bytes (Serf 512).

Coordinates: the core asks for an ack payload (our Vivaldi coordinate, `coordinate.py`) and
reports each direct ack's RTT with the acking member's coordinate; `Serf` feeds the sample to its
`CoordinateClient` and caches the peer's coordinate (`cached_coordinate(name)`).

Queries (queries.py): `query(name, payload, now, ...)` asks every member (or those the filters
select) through a third Lamport clock and queue; members answer with `respond`. Serf's own queries
(`_serf_ping`, `_serf_conflict`, the key operations a driver registers) are answered here
(serf_internal.py); others reach the driver as QUERY events. A name conflict about ourselves runs
`_serf_conflict` when `name_conflict_resolution` is on, and the minority shuts down.

Coalescing (coalesce.py): with both periods above zero, member events and coalescable user events
are held and merged before they reach `take_events`.

Merge check: `merge_check([(name, tags), ...])`, when set, returns why these members may not be
in this pool (Consul: another datacenter, a node ID taken twice). An alive message about such a
member is ignored; a push-pull that carries one is not merged, and a join that gets one fails
with that text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack

from appliance.gossip.broadcast import TransmitLimitedQueue
from appliance.gossip.coalesce import CoalesceLoop, MemberCoalescer, UserCoalescer
from appliance.gossip.config import GossipConfig
from appliance.gossip.coordinate import Coordinate, CoordinateClient, CoordinateError
from appliance.gossip.core import GossipCore
from appliance.gossip.lamport import LamportClock
from appliance.gossip.members import Address, Rng
from appliance.gossip.messages import (
    USER_EVENT_MAX_BYTES,
    DecodeError,
    JoinIntent,
    LeaveIntent,
    StreamError,
    UserEvent,
    decode_coordinate_payload,
    encode_coordinate_payload,
    encode_message,
    encode_stream,
)
from appliance.gossip.outputs import EventKind, MemberEvent, Output
from appliance.gossip.queries import QueryEngine
from appliance.gossip.serf_internal import InternalQueries
from appliance.gossip.serf_members import (  # re-exported: the agent and its tests import them from here
    Member as Member,
    MemberStatus as MemberStatus,
    SerfEvent as SerfEvent,
    SerfEventKind as SerfEventKind,
    SerfView,
    TagsError as TagsError,
    decode_tags as decode_tags,
    encode_tags as encode_tags,
)
from appliance.gossip.serf_queries import MergeCheck, SerfQueryMixin
from appliance.gossip.user_events import USER_EVENT_SIZE_LIMIT, EventBuffer, UserEventError, valid_state

MAX_QUEUE_DEPTH = 4096  # Serf's MaxQueueDepth for its intent, event and query queues
QUEUE_CHECK_INTERVAL_S = 30.0


class Serf(SerfQueryMixin):
    def __init__(self, name: str, addr: str, port: int, config: GossipConfig, rng: Rng, now: float,
                 tags: dict[str, str] | None = None, user_event_size_limit: int = USER_EVENT_SIZE_LIMIT,
                 merge_check: MergeCheck | None = None) -> None:
        if not 0 < user_event_size_limit <= USER_EVENT_MAX_BYTES:
            raise UserEventError(f"user event size limit exceeds limit of {USER_EVENT_MAX_BYTES} bytes")
        self.name = name
        self.config = config
        self.tags = dict(tags or {})
        self.clock = LamportClock()
        self.clock.increment()
        self.event_clock = LamportClock()
        self.event_clock.increment()
        self.events_queue = TransmitLimitedQueue(config.retransmit_mult)
        self.user_event_size_limit = user_event_size_limit
        self._ignore_old_joins = 0
        self.coordinates = CoordinateClient(rng)
        self.coordinate_cache: dict[str, Coordinate] = {}
        self.members: dict[str, Member] = {}
        self.intents = TransmitLimitedQueue(config.retransmit_mult)
        self.recent_intents: dict[str, tuple[str, int, float]] = {}  # name -> (kind, ltime, wall time)
        self.stats: Counter[str] = Counter()
        self.event_buffer = EventBuffer(self.stats)  # recent user events (user_events.py)
        self.state = MemberStatus.ALIVE  # of the local Serf instance
        self.has_left = False
        self.is_shutdown = False  # a lost name conflict (the driver then closes its sockets)
        self.packet_sealed = True
        self.flaps = 0
        self._events: list[SerfEvent] = []
        self._logs: list[tuple[str, str, str]] = []  # (source "serf"/"memberlist", level, text)
        self.merge_check = merge_check
        self._tags_cache: dict[bytes, dict[str, str]] = {}
        self.name_conflict_resolution = config.name_conflict_resolution
        self.queries = QueryEngine(self, config.retransmit_mult)
        self.internal = InternalQueries(self)
        self._user_coalesce = CoalesceLoop(UserCoalescer(), config.user_coalesce_period_s,
                                           config.user_quiescent_period_s, self._call_at, self._to_member_coalesce)
        self._member_coalesce = CoalesceLoop(MemberCoalescer(), config.coalesce_period_s,
                                             config.quiescent_period_s, self._call_at, self._events.append)
        self._join_pending = False
        self._leave_phase = 0
        self._early_timers: list[tuple[float, Callable[[Any], None], Any]] | None = []
        self.core = GossipCore(name, addr, port, config, rng, now, meta=encode_tags(self.tags), delegate=self)
        for when, fn, arg in self._early_timers:
            self.core.call_at(when, fn, arg)
        self._early_timers = None
        self.core.call_at(now + config.reap_interval_s, self._reap_tick)
        self.core.call_at(now + config.reconnect_interval_s, self._reconnect_tick)
        self.core.call_at(now + QUEUE_CHECK_INTERVAL_S, self._queue_check_tick)

    # ============================================================ driver API (forwarded)

    @property
    def now(self) -> float:
        return self.core.now

    def tick(self, now: float) -> None:
        if not self.is_shutdown:
            self.core.tick(now)

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()

    def on_packet(self, src: Address, data: bytes, now: float, sealed: bool = True) -> None:
        """A datagram; `sealed` False: it came in the clear to a member that has keys (key queries
        in it are refused)."""
        if not self.is_shutdown:
            self.packet_sealed = sealed
            self.core.on_packet(src, data, now)
            self.packet_sealed = True

    def on_stream(self, src: Address, data: bytes, now: float) -> bytes:
        if self.is_shutdown:
            return encode_stream(StreamError("serf is shut down"))
        return self.core.on_stream(src, data, now)

    def on_stream_reply(self, token: int, data: bytes | None, now: float) -> str:
        """Feed the answer to a stream we opened; returns why its state was refused ("" if it was not)."""
        return self.core.on_stream_reply(token, data, now)

    def take_outputs(self) -> list[Output]:
        return self.core.take_outputs()

    def take_events(self) -> list[SerfEvent]:
        """Serf's events; the core's own (suspect and the like) are dropped unless taken first."""
        self.core.take_events()
        out = self._events[:]
        self._events.clear()  # the member coalescer's sink appends to this very list
        return out

    def join(self, addresses: list[Address], now: float, ignore_old: bool = False) -> list[int]:
        """Push-pull with each address; on the first success broadcast a join intent.

        `ignore_old`: do not deliver the user events the contacted members still remember (Consul
        joins this way); otherwise the recent events in their push-pull state are delivered here.
        """
        self._join_pending = True
        tokens = self.core.join(addresses, now)  # the stream tokens, so a driver can report each address
        if ignore_old:
            self._ignore_old_joins += len(tokens)  # joins in flight that skip old events
        return tokens

    def user_event(self, name: str, payload: bytes, coalesce: bool, now: float) -> int:
        """Fire a user event to every member (this one included); returns its LTime.

        UserEventError if name plus payload exceed `user_event_size_limit` (Serf's texts).
        """
        self.core.now = now
        size = len(name.encode("utf-8")) + len(payload)
        if size > self.user_event_size_limit:
            raise UserEventError(
                f"user event exceeds configured limit of {self.user_event_size_limit} bytes before encoding")
        msg = UserEvent(self.event_clock.time(), name, bytes(payload), coalesce)
        raw = encode_message(msg)
        if len(raw) > self.user_event_size_limit:  # the message as sent (type, LTime, framing) too
            raise UserEventError(
                f"user event exceeds configured limit of {self.user_event_size_limit} bytes after encoding")
        self.event_clock.increment()
        self._handle_user_event(msg)
        self.events_queue.queue(raw)
        self.stats["user_events_sent"] += 1
        return msg.ltime

    def coordinate(self) -> Coordinate:
        """This member's current network coordinate."""
        return self.coordinates.get()

    def cached_coordinate(self, name: str) -> Coordinate | None:
        """The last coordinate a member sent us in an ack (ours for our own name)."""
        if name == self.name:
            return self.coordinates.get()
        coord = self.coordinate_cache.get(name)
        return None if coord is None else coord.clone()

    def view(self) -> SerfView:
        """What the driver and metrics read of this instance and its core (a snapshot)."""
        return SerfView(self.core.view(), len(self.members), len(self.intents),
                        len(self.events_queue), self.clock.time(), self.event_clock.time(),
                        self.coordinates.resets, self.flaps, len(self.queries.queue), self.queries.clock.time(),
                        dict(self.stats))

    def restore_clocks(self, clock: int, event_clock: int, query_clock: int = 0) -> None:
        """Serf's restore from a snapshot: the clocks witness the saved values (0: none saved), and
        user events and queries up to the saved clocks are not handled again."""
        if clock:
            self.clock.witness(clock)
        if event_clock:
            self.event_clock.witness(event_clock)
            self.event_buffer.min_time = max(self.event_buffer.min_time, event_clock + 1)
        if query_clock:
            self.queries.clock.witness(query_clock)
            self.queries.min_time = max(self.queries.min_time, query_clock + 1)

    def set_tags(self, tags: dict[str, str], now: float) -> None:
        """New tags: re-encoded metadata, a new incarnation, member-update everywhere."""
        meta = encode_tags(tags)
        self.tags = dict(tags)
        self.core.update_meta(meta, now)

    def leave(self, now: float) -> None:
        """Start a graceful leave (see the module docstring); `has_left` turns true at the end."""
        self.core.now = now
        if self.state != MemberStatus.ALIVE:
            return
        self.state = MemberStatus.LEAVING
        msg = LeaveIntent(self.clock.time(), self.name, False)
        self.clock.increment()
        self._handle_leave_intent(msg)
        self._leave_phase = 1
        if self._others_alive():
            self.intents.queue(encode_message(msg), on_finished=lambda: self._leave_step(1))
            self.core.call_at(now + self.config.broadcast_timeout_s, self._leave_step, 1)
        else:
            self._leave_step(1)

    def force_leave(self, node: str, now: float, prune: bool = False) -> bool:
        """Broadcast a leave intent for another member (failed -> left); False if unknown."""
        self.core.now = now
        if node not in self.members:
            return False
        msg = LeaveIntent(self.clock.time(), node, prune)
        self.clock.increment()
        self._handle_leave_intent(msg)
        self.intents.queue(encode_message(msg))
        return True

    def member_list(self) -> list[Member]:
        return sorted(self.members.values(), key=lambda m: m.name)

    def member(self, name: str) -> Member | None:
        return self.members.get(name)

    # ============================================================ delegate (called by the core)

    def notify(self, event: MemberEvent) -> None:
        kind = event.kind
        if kind is EventKind.JOIN:
            self._on_join(event)
        elif kind is EventKind.FAIL or kind is EventKind.LEAVE:
            self._on_gone(event)
        elif kind is EventKind.UPDATE:
            member = self.members.get(event.node)
            if member is not None:
                member.addr, member.port = event.addr, event.port
                member.tags = self._tags(event.meta)
                self._emit(SerfEventKind.MEMBER_UPDATE, event.node, event.time)

    def handle_intent(self, msg: JoinIntent | LeaveIntent) -> None:
        if isinstance(msg, JoinIntent):
            rebroadcast = self._handle_join_intent(msg)
        else:
            rebroadcast = self._handle_leave_intent(msg)
        if rebroadcast:
            self.intents.queue(encode_message(msg))

    def handle_user_event(self, msg: UserEvent) -> None:
        if self._handle_user_event(msg):
            self.events_queue.queue(encode_message(msg))

    def ack_payload(self) -> bytes:
        c = self.coordinates.coord
        return encode_coordinate_payload(c.vec, c.error, c.adjustment, c.height)

    def notify_ping_complete(self, node: str, rtt_s: float, payload: bytes) -> None:
        """A direct ack from `node` within the probe timeout: one Vivaldi sample."""
        try:
            fields = decode_coordinate_payload(payload)
        except DecodeError:
            self.stats["bad_coordinates"] += 1
            return
        if fields is None:
            return
        other = Coordinate(*fields)
        try:
            self.coordinates.update(node, other, rtt_s)
        except CoordinateError:
            self.stats["rejected_coordinates"] += 1
            return
        self.coordinate_cache[node] = other

    def has_broadcasts(self) -> bool:
        return len(self.intents) > 0 or len(self.events_queue) > 0 or len(self.queries.queue) > 0

    def get_broadcasts(self, limit: int) -> list[bytes]:
        n = len(self.members)
        parts = self.intents.get_broadcasts(0, limit, n)
        for queue in (self.queries.queue, self.events_queue):  # Serf's order: intents, queries, events
            if queue:
                left = limit - sum(len(p) for p in parts)
                if left > 8:
                    parts.extend(queue.get_broadcasts(0, left, n))
        return parts

    def local_state(self) -> bytes:
        status_ltimes = {m.name: m.status_ltime for m in self.members.values()}
        left = sorted(m.name for m in self.members.values() if m.status == MemberStatus.LEFT)
        state: bytes = msgpack.packb([self.clock.time(), status_ltimes, left, self.event_clock.time(),
                                      self.event_buffer.state(), self.queries.clock.time()],
                                     use_bin_type=True)
        return state

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        try:
            state = msgpack.unpackb(data, raw=False, strict_map_key=True)
            if type(state) is not list or len(state) not in (3, 5, 6):
                raise ValueError("bad arity")
            ltime, status_ltimes, left = state[:3]
            event_ltime, events = state[3:5] if len(state) >= 5 else (0, [])
            query_ltime = state[5] if len(state) == 6 else 0
            valid = (
                type(query_ltime) is int and query_ltime >= 0 and
                type(ltime) is int and ltime >= 0 and type(status_ltimes) is dict and type(left) is list
                and all(type(k) is str and type(v) is int and v >= 0 for k, v in status_ltimes.items())
                and all(type(x) is str for x in left)
                and type(event_ltime) is int and event_ltime >= 0 and valid_state(events)
            )
        except Exception:  # noqa: BLE001 - garbage user state from a peer: count and ignore
            valid = False
        if not valid:
            self.stats["bad_remote_state"] += 1
            return
        if ltime > 0:
            self.clock.witness(ltime - 1)
        if event_ltime > 0:
            self.event_clock.witness(event_ltime - 1)
        self.queries.witness_remote(query_ltime)
        if join and self._ignore_old_joins:
            self.event_buffer.min_time = max(self.event_buffer.min_time, event_ltime)
        for lt, evs in events:  # replayed, not re-broadcast: dedup makes this idempotent
            for name, payload in evs:
                self._handle_user_event(UserEvent(lt, name, payload, False))
        left_set = set(left)
        for name in left:
            self._handle_leave_intent(LeaveIntent(status_ltimes.get(name, 0) + 1, name, False))
        if status_ltimes:  # witnessing every LTime is witnessing the largest
            self.clock.witness(max(status_ltimes.values()))
        members = self.members
        for name, lt in status_ltimes.items():
            if name in left_set:
                continue
            member = members.get(name)
            if member is not None and lt <= member.status_ltime:
                continue  # an intent we already have (most of a table): _handle_join_intent would ignore it
            self._handle_join_intent(JoinIntent(lt, name))

    def on_join_result(self, ok: bool) -> None:
        if self._ignore_old_joins:
            self._ignore_old_joins -= 1
        if ok and self._join_pending:
            self._join_pending = False
            self._broadcast_join()

    # ============================================================ member status

    def _tags(self, meta: bytes) -> dict[str, str]:
        tags = decode_tags(meta)
        if tags is None:
            self.stats["bad_tags"] += 1
            return {}
        return tags

    def _emit(self, kind: SerfEventKind, node: str, time: float | None = None) -> None:
        now = self.core.now if time is None else time  # `time` is given while the core is being built
        self._user_coalesce.push(SerfEvent(kind, node, now), now)

    def _to_member_coalesce(self, event: SerfEvent) -> None:
        self._member_coalesce.push(event, event.time)

    def _call_at(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        if self._early_timers is not None:  # the core is still being built (our own join event)
            self._early_timers.append((when, fn, arg))
        else:
            self.core.call_at(when, fn, arg)

    def _on_join(self, event: MemberEvent) -> None:
        member = self.members.get(event.node)
        if member is None:
            member = Member(event.node, event.addr, event.port, self._tags(event.meta), MemberStatus.ALIVE)
            buffered = self.recent_intents.pop(event.node, None)
            if buffered is not None:
                kind, ltime, _ = buffered
                member.status_ltime = ltime
                if kind == "leave":
                    member.status = MemberStatus.LEAVING
            self.members[event.node] = member
        else:
            if (member.status == MemberStatus.FAILED and member.leave_time is not None
                    and event.time - member.leave_time < self.config.flap_timeout_s):
                self.flaps += 1
            member.status = MemberStatus.ALIVE
            member.leave_time = None
            member.addr, member.port = event.addr, event.port
            member.tags = self._tags(event.meta)
        self._emit(SerfEventKind.MEMBER_JOIN, event.node, event.time)

    def _on_gone(self, event: MemberEvent) -> None:
        member = self.members.get(event.node)
        if member is None:
            return
        if member.status == MemberStatus.LEAVING:
            member.status = MemberStatus.LEFT
            member.leave_time = event.time
            self._emit(SerfEventKind.MEMBER_LEAVE, event.node, event.time)
        elif member.status == MemberStatus.ALIVE:
            member.status = MemberStatus.FAILED
            member.leave_time = event.time
            self._emit(SerfEventKind.MEMBER_FAILED, event.node, event.time)

    def _buffer_intent(self, node: str, kind: str, ltime: int) -> bool:
        old = self.recent_intents.get(node)
        if old is not None and old[1] >= ltime:
            return False
        self.recent_intents[node] = (kind, ltime, self.core.now)
        return True

    def _handle_join_intent(self, msg: JoinIntent) -> bool:
        self.clock.witness(msg.ltime)
        member = self.members.get(msg.node)
        if member is None:
            return self._buffer_intent(msg.node, "join", msg.ltime)
        if msg.ltime <= member.status_ltime:
            return False
        member.status_ltime = msg.ltime
        if member.status == MemberStatus.LEAVING:
            member.status = MemberStatus.ALIVE
        return True

    def _handle_leave_intent(self, msg: LeaveIntent) -> bool:
        self.clock.witness(msg.ltime)
        member = self.members.get(msg.node)
        if member is None:
            return self._buffer_intent(msg.node, "leave", msg.ltime)
        if msg.ltime <= member.status_ltime:
            return False
        if msg.node == self.name and self.state == MemberStatus.ALIVE:
            self.stats["leave_refuted"] += 1
            self._broadcast_join()  # a stale leave about us: our newer join overrides it
            return False
        member.status_ltime = msg.ltime  # always, so two leave intents cannot echo forever
        if member.status == MemberStatus.ALIVE:
            member.status = MemberStatus.LEAVING
        elif member.status == MemberStatus.FAILED:
            member.status = MemberStatus.LEFT
            member.leave_time = self.core.now
            self._emit(SerfEventKind.MEMBER_LEAVE, msg.node)
        elif member.status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        if msg.prune and member.status == MemberStatus.LEFT:
            self._erase(msg.node)
        return True

    def _broadcast_join(self) -> None:
        msg = JoinIntent(self.clock.time(), self.name)
        self.clock.witness(msg.ltime)
        self._handle_join_intent(msg)
        self.intents.queue(encode_message(msg))

    def _others_alive(self) -> bool:
        return any(m.status == MemberStatus.ALIVE and m.name != self.name for m in self.members.values())

    def _leave_step(self, phase: int) -> None:
        """Advance the graceful leave from `phase` (timeouts and finished hooks may both call it)."""
        if self._leave_phase != phase:
            return
        now = self.core.now
        if phase == 1:  # intent out: now the core's own departure
            self._leave_phase = 2
            self.core.leave(now)
            if self.core.leave_broadcast_done:
                self._leave_step(2)
            else:
                self.core.call_at(now + self.config.broadcast_timeout_s, self._leave_step, 2)
                self.core.call_at(now + self.config.gossip_interval_s, self._leave_poll, None)
        elif phase == 2:  # keep answering probes a little longer
            self._leave_phase = 3
            self.core.call_at(now + self.config.leave_propagate_delay_s, self._leave_step, 3)
        elif phase == 3:
            self._leave_phase = 4
            self.state = MemberStatus.LEFT
            self.has_left = True

    def _leave_poll(self, _: Any) -> None:
        if self._leave_phase == 2:
            if self.core.leave_broadcast_done:
                self._leave_step(2)
            else:
                self.core.call_at(self.core.now + self.config.gossip_interval_s, self._leave_poll, None)

    # ============================================================ reconnect and reap

    def _reconnect_tick(self, _: Any) -> None:
        cfg = self.config
        self.core.call_at(self.core.now + cfg.reconnect_interval_s, self._reconnect_tick)
        if self.state != MemberStatus.ALIVE:
            return
        failed = sorted((m for m in self.members.values() if m.status == MemberStatus.FAILED), key=lambda m: m.name)
        if not failed:
            return
        left = sum(1 for m in self.members.values() if m.status == MemberStatus.LEFT)
        alive = max(1, len(self.members) - len(failed) - left)
        if self.core.rng.random() > len(failed) / alive:
            return
        target = failed[self.core.rng.randrange(len(failed))]
        self.stats["reconnects"] += 1
        self.core.join([(target.addr, target.port)], self.core.now)

    def _reap_tick(self, _: Any) -> None:
        cfg = self.config
        now = self.core.now
        self.core.call_at(now + cfg.reap_interval_s, self._reap_tick)
        gone = sorted(((m, m.leave_time) for m in self.members.values() if m.leave_time is not None),
                      key=lambda ml: ml[0].name)
        for member, leave_time in gone:
            gone_s = now - leave_time
            if (member.status == MemberStatus.FAILED and gone_s > cfg.reconnect_timeout_s) or (
                member.status == MemberStatus.LEFT and gone_s > cfg.tombstone_timeout_s
            ):
                self._erase(member.name)
        horizon = now - cfg.recent_intent_timeout_s
        for name in [n for n, (_, _, t) in self.recent_intents.items() if t < horizon]:
            del self.recent_intents[name]

    def _erase(self, name: str) -> None:
        if self.members.pop(name, None) is not None:
            self.coordinate_cache.pop(name, None)
            self.coordinates.forget(name)
            self._emit(SerfEventKind.MEMBER_REAP, name)

    def _queue_check_tick(self, _: Any) -> None:
        """Bound the Serf queues (Serf#78: they grow without limit when nobody can be told)."""
        self.core.call_at(self.core.now + QUEUE_CHECK_INTERVAL_S, self._queue_check_tick)
        for label, queue in (("intent", self.intents), ("event", self.events_queue), ("query", self.queries.queue)):
            dropped = queue.prune(MAX_QUEUE_DEPTH)
            if dropped:
                self.stats[f"{label}_queue_pruned"] += dropped

    # ============================================================ user events

    def _handle_user_event(self, msg: UserEvent) -> bool:
        """True if the event is new: then it has been delivered here (a USER event) and is to be re-broadcast."""
        if not self.event_buffer.accept(self.event_clock, msg):
            return False
        self._user_coalesce.push(SerfEvent(SerfEventKind.USER, "", self.core.now, msg.name, msg.payload, msg.ltime,
                                           msg.cc), self.core.now)
        return True
