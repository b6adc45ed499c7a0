"""The gossip driver: runs one sans-IO `Serf` on the network, on the event loop.

How it works
------------
`GossipDriver` owns a `Serf` (which owns the SWIM `GossipCore`) and a `GossipTransport` (UDP and
TCP on one port, encryption). The event loop's monotonic clock is the `now` every core call gets.
Each way into the core is one synchronous call followed by `_after()`:

* a datagram -> `serf.on_packet(src, data, now)`;
* an inbound stream on the gossip channel -> `serf.on_stream(src, data, now)`, whose return value
  is the reply;
* a timer -> `serf.tick(now)`; a single `loop.call_at` handle always points at
  `serf.next_deadline()`;
* API calls (`join`, `leave`, `force_leave`, `set_tags`).

`_after()` drains `take_outputs()` (a `Send` becomes a datagram; a `StreamRequest` becomes a task
that opens the stream and feeds the reply, or None on failure, back through `on_stream_reply`),
drains `take_events()` and hands every Serf member event to the subscribers with the member's
current record (None once reaped), logs it the way Consul does (`serf: EventMemberJoin: node2
127.0.0.1`), feeds the metrics sink, and re-arms the timer. Subscribers run synchronously on the
loop and must not block (schedule a task for slow work).

`join` reports how many addresses answered a join push-pull (Consul's `Successfully joined
cluster by contacting N nodes`); it raises `JoinError` with every address's error when none did.
`leave` runs Serf's graceful leave (intent, then our own departure, then `leave_propagate_delay_s`
of still answering probes) and returns when it is done or its time is up.

With a `snapshot_path` (the agent's `<data_dir>/serf/local.snapshot`) member events are
logged to disk (snapshot_file.py); at start the clocks are restored from it and the members it
remembers are tried one at a time, in random order, until one answers (Serf's rejoin).

Keyring operations (`keyring_operation`) are Serf's internal key queries (key_manager.py),
tallied as Serf's key manager does. `query` runs any other query. Log lines the core produces
(name conflicts, refused members, old queries) are logged with the pool's serf or memberlist
logger. A Serf that lost a name conflict (`is_shutdown`) has its sockets closed.

`merge_check(members)` (Consul's merge delegate; pool_setup.py gives the LAN pool one that
refuses members of another datacenter) is handed to Serf: such members' alive messages are
ignored and a join whose answer lists one fails with its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.gossip.config import GossipConfig
from appliance.gossip.coordinate import Coordinate
from appliance.gossip.key_manager import KeyManager, KeyringResult
from appliance.gossip.keyring import Keyring
from appliance.gossip.members import Address
from appliance.gossip.messages import DecodeError, PushPull, StreamError, decode_stream
from appliance.gossip.outputs import Send, StreamRequest
from appliance.gossip.queries import QueryHandle
from appliance.gossip.serf import Member, MemberStatus, Serf, SerfEvent, SerfEventKind
from appliance.gossip.serf_members import SerfView
from appliance.gossip.serf_queries import MergeCheck
from appliance.gossip.snapshot import FLUSH_INTERVAL_S, SnapshotState
from appliance.gossip.snapshot_file import MemberSnapshot
from appliance.gossip.transport import CHANNEL_ERROR, CHANNEL_GOSSIP, GossipTransport, StreamFailed
from appliance.gossip.user_events import UserEventError
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus

Subscriber = Callable[[SerfEvent, Member | None], None]
MetricsSink = Callable[[str, str, float], None]  # (kind "counter"|"sample", internal name, value)

EVENT_LOG_NAMES = {
    SerfEventKind.MEMBER_JOIN: "EventMemberJoin",
    SerfEventKind.MEMBER_LEAVE: "EventMemberLeave",
    SerfEventKind.MEMBER_FAILED: "EventMemberFailed",
    SerfEventKind.MEMBER_UPDATE: "EventMemberUpdate",
    SerfEventKind.MEMBER_REAP: "EventMemberReap",
}
QUEUE_CHECK_INTERVAL_S = 30.0  # Serf samples its queue depths this often
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# Transport and core counters forwarded to the metrics sink as deltas.
TRANSPORT_COUNTERS = ("udp_sent", "udp_received", "tcp_sent", "tcp_accept", "tcp_connect", "decrypt_failed")
CORE_COUNTERS = ("msg_alive", "msg_suspect", "msg_dead", "decode_errors")
SERF_COUNTERS = ("queries", "query_acks", "query_responses", "query_duplicate_acks", "query_duplicate_responses")


class JoinError(Exception):
    """No address answered a join; the text lists each address's error."""


def multi_error(errors: list[str]) -> str:
    """hashicorp/go-multierror's text, which Consul returns for a failed join or keyring operation."""
    points = "\n\t".join(f"* {e}" for e in errors)
    return f"{len(errors)} {'error' if len(errors) == 1 else 'errors'} occurred:\n\t{points}\n\n"


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" -> (host, port); ValueError for a bad port."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        if rest.startswith(":"):
            return host, _port(rest[1:])
        return host, default_port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return host, _port(port)
    return address, default_port


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port {text!r}")
    return int(text)


class GossipDriver:
    """One gossip pool member on the network. The API the agent (and client agents) use."""

    def __init__(self, name: str, *, bind: str, port: int, advertise: str = "", tags: dict[str, str] | None = None,
                 config: GossipConfig | None = None, keyring: Keyring | None = None,
                 encrypt_verify_incoming: bool = True, encrypt_verify_outgoing: bool = True,
                 keyring_path: str = "", rng: random.Random | None = None, log_prefix: str = "agent",
                 snapshot_path: str = "", pool: str = "lan", merge_check: MergeCheck | None = None) -> None:
        self.name = name
        self.bind = bind
        self.port = port
        self.advertise = advertise
        self.tags = dict(tags or {})
        self.config = (config or GossipConfig.lan()).validate()
        self.keyring = keyring if keyring is not None else Keyring()
        self.keyring_path = keyring_path
        self.rng = rng or random.Random()
        self.serf: Serf | None = None
        self.transport = GossipTransport(
            bind, port, keyring=self.keyring, on_packet=self._on_packet, on_stream=self._on_stream,
            verify_incoming=encrypt_verify_incoming, verify_outgoing=encrypt_verify_outgoing,
            tcp_timeout_s=self.config.tcp_timeout_s)
        self.serf_log = logging.getLogger(f"{log_prefix}.serf.{pool}")  # pool: "lan" or "wan"
        self.memberlist_log = logging.getLogger(f"{log_prefix}.memberlist.{pool}")
        self.keys = KeyManager(name, self.keyring, keyring_path, self.serf_log)
        self.merge_check = merge_check
        self.metrics_sink: MetricsSink | None = None
        self._subscribers: list[Subscriber] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._joins: dict[int, asyncio.Future[tuple[bool, str]]] = {}  # stream token -> (ok, error text)
        self._counted: dict[str, float] = {}
        self._flaps = 0
        self._probe: int | None = None  # the sequence number of the core's probe in flight, timed to its end
        self._probe_started = 0.0
        self._stopped = False
        # the member snapshot (snapshot_file.py): a restarted agent rejoins the members it knew
        self.snapshot = MemberSnapshot(snapshot_path, name, self.serf_log) if snapshot_path else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind the UDP and TCP sockets, create the Serf member and start its timers."""
        loop = self._loop = asyncio.get_running_loop()
        await self.transport.start()
        self.port = self.transport.port
        addr = self.advertise or self.bind
        if addr in ("", "0.0.0.0", "::"):
            addr = "127.0.0.1"
        self.advertise = addr
        serf = self.serf = Serf(self.name, addr, self.port, self.config, self.rng, loop.time(), tags=self.tags,
                                merge_check=self.merge_check)
        self.keys.register(serf)
        previous: list[tuple[str, str]] = []
        if self.snapshot is not None:
            self._restore_clocks(serf, self.snapshot.open())
            previous = self.snapshot.previous()
        self._after()
        self._spawn(self._queue_sampler(serf), "gossip-queue-check")
        if self.snapshot is not None:
            self._spawn(self._snapshot_ticker(serf, self.snapshot), "gossip-snapshot")
        if previous:
            self._spawn(self._rejoin(previous), "gossip-rejoin")
        self.memberlist_log.debug("memberlist: listening on %s:%d (udp and tcp), advertising %s:%d",
                                  self.bind, self.port, addr, self.port)

    async def serve(self, *, task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """start(), report started with the bound port, run until cancelled, then stop(). A
        graceful leave() is the agent's to run before this is cancelled."""
        await self.start()
        try:
            task_status.started(self.port)
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close the sockets and cancel everything in flight (without leaving: peers see a failure)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for fut in self._joins.values():
            if not fut.done():
                fut.set_result((False, "agent is shutting down"))
        await self.transport.stop()
        if self.snapshot is not None:
            self.snapshot.close()

    # ------------------------------------------------------------------ views

    def members(self) -> list[Member]:
        """Every member this agent knows (failed and left ones until reaped), sorted by name."""
        return self.serf.member_list() if self.serf is not None else []

    def local_member(self) -> Member:
        if self.serf is None:
            return Member(self.name, self.advertise or self.bind, self.port, dict(self.tags), MemberStatus.ALIVE)
        return self.serf.member(self.name) or Member(
            self.name, self.advertise, self.port, dict(self.serf.tags), self.serf.state)

    def member(self, name: str) -> Member | None:
        return self.serf.member(name) if self.serf is not None else None

    @property
    def encrypted(self) -> bool:
        return bool(self.keyring)

    def view(self) -> SerfView | None:
        """What metrics and status pages read of the pool (None before start)."""
        return self.serf.view() if self.serf is not None else None

    def coordinate(self) -> Coordinate | None:
        """This member's network coordinate in this pool (None before start)."""
        return self.serf.coordinate() if self.serf is not None else None

    def cached_coordinate(self, name: str) -> Coordinate | None:
        """The coordinate member `name` last sent us (None before start or when unknown)."""
        return self.serf.cached_coordinate(name) if self.serf is not None else None

    def stats(self) -> dict[str, str]:
        """The serf_lan section of /v1/agent/self (every value a string, as Consul's)."""
        view = self.view()
        members = self.members()
        count = {s: sum(1 for m in members if m.status == s) for s in (MemberStatus.FAILED, MemberStatus.LEFT)}
        return {
            "coordinate_resets": str(view.coordinate_resets if view is not None else 0),
            "encrypted": str(self.encrypted).lower(),
            "event_queue": str(view.event_queue if view is not None else 0),
            "event_time": str(view.event_time if view is not None else 1),
            "failed": str(count[MemberStatus.FAILED]),
            "health_score": str(view.health_score if view is not None else 0),
            "intent_queue": str(view.intent_queue if view is not None else 0),
            "left": str(count[MemberStatus.LEFT]),
            "member_time": str(view.member_time if view is not None else 1),
            "members": str(len(members)),
            "query_queue": str(view.query_queue if view is not None else 0),
            "query_time": str(view.query_time if view is not None else 1),
        }

    def garbage_stats(self) -> dict[str, int]:
        """Counts of dropped input: undecodable packets, failed decryption, bad streams."""
        view = self.view()
        core = view.core.stats if view is not None else {}
        t = self.transport.stats
        return {"decode_errors": core.get("decode_errors", 0), "unknown_messages": core.get("unknown_messages", 0),
                "decrypt_failed": t["decrypt_failed"], "oversized_packets": t["oversized_packets"],
                "bad_streams": t["bad_streams"], "streams_refused": t["streams_refused"]}

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, callback: Subscriber) -> None:
        """Call `callback(event, member)` for every member event (member None once reaped)."""
        self._subscribers.append(callback)

    # ------------------------------------------------------------------ operations

    async def resolve(self, address: str) -> list[Address]:
        """Every (ip, port) an address names; a missing port means this agent's gossip port."""
        host, port = split_host_port(address, self.port)
        if not host:
            raise ValueError(f"missing host in {address!r}")
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        seen: list[Address] = []
        for family, _, _, _, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            ip, ip_port = sockaddr[0], sockaddr[1]  # an IP family's sockaddr starts (host, port)
            if isinstance(ip, str) and isinstance(ip_port, int) and (ip, ip_port) not in seen:
                seen.append((ip, ip_port))
        return seen

    async def join(self, addresses: list[str]) -> int:
        """Push-pull with each address; the number that answered. JoinError when none did."""
        serf, loop = self.serf, self._loop
        if serf is None or loop is None:
            raise JoinError("gossip is not running")
        errors: list[str] = []
        waits: list[tuple[str, asyncio.Future[tuple[bool, str]]]] = []
        for address in addresses:
            try:
                targets = await self.resolve(address)
            except (OSError, ValueError) as err:
                errors.append(f"Failed to resolve {address}: {err}")
                continue
            if not targets:
                errors.append(f"Failed to resolve {address}: no addresses")
                continue
            tokens = serf.join(targets, self._now(), ignore_old=True)  # as Consul joins
            for token in tokens:
                fut: asyncio.Future[tuple[bool, str]] = loop.create_future()
                self._joins[token] = fut
                waits.append((address, fut))
            self._after()
        contacted = 0
        for address, fut in waits:
            ok, error = await fut
            if ok:
                contacted += 1
            else:
                errors.append(f"Failed to join {address}: {error}")
        if contacted:
            self.memberlist_log.info("memberlist: joined %d of %d addresses", contacted, len(addresses))
        if contacted == 0:
            raise JoinError(multi_error(errors or ["no addresses to join"]))
        return contacted

    async def leave(self) -> None:
        """Leave gracefully: intent, our departure, then keep answering for the propagate delay."""
        serf = self.serf
        if serf is None or serf.state != MemberStatus.ALIVE:
            return
        others = any(m.status == MemberStatus.ALIVE and m.name != self.name for m in serf.member_list())
        serf.leave(self._now())
        self._after()
        if others:  # else nobody to tell and nobody probing us
            cfg = self.config
            limit = self._now() + 2 * cfg.broadcast_timeout_s + cfg.leave_propagate_delay_s + 1.0
            while not serf.has_left and self._now() < limit:
                await asyncio.sleep(0.05)
            if not serf.has_left:
                self.serf_log.warning("serf: timeout while waiting for graceful leave")
        if self.snapshot is not None:
            self.snapshot.left()  # the next start does not rejoin on its own

    def force_leave(self, node: str, prune: bool = False) -> bool:
        """Mark a member left (failed -> left; with prune, forget it now). False if unknown."""
        if self.serf is None:
            return False
        ok = self.serf.force_leave(node, self._now(), prune=prune)
        self._after()
        return ok

    def set_tags(self, tags: dict[str, str]) -> None:
        """New tags for this member: a new incarnation, member-update everywhere."""
        self.tags = dict(tags)
        if self.serf is not None:
            self.serf.set_tags(tags, self._now())
            self._after()

    def user_event(self, name: str, payload: bytes, coalesce: bool = False) -> int:
        """Fire a Serf user event to the pool (delivered here too); its LTime. UserEventError if too large."""
        if self.serf is None:
            raise UserEventError("gossip is not running")
        ltime = self.serf.user_event(name, payload, coalesce, self._now())
        self._after()
        return ltime

    # ------------------------------------------------------------------ keyring

    async def keyring_operation(self, op: str, key_b64: str = "", relay_factor: int = 0) -> KeyringResult:
        """Run `op` (list, install, use, remove) on every alive member and tally the answers."""
        if self.serf is None or self.serf.is_shutdown:
            raise JoinError("gossip is not running")
        return await self.keys.operation(self.serf, op, key_b64, relay_factor, self._after)

    async def query(self, name: str, payload: bytes, *, filter_nodes: list[str] | None = None,
                    filter_tags: dict[str, str] | None = None, request_ack: bool = False, relay_factor: int = 0,
                    timeout_s: float = 0.0) -> QueryHandle:
        """A Serf query; returns its handle once the timeout closed it (QueryError if refused)."""
        if self.serf is None or self.serf.is_shutdown:
            raise JoinError("gossip is not running")
        handle = self.serf.query(name, payload, self._now(), filter_nodes=filter_nodes, filter_tags=filter_tags,
                                 request_ack=request_ack, relay_factor=relay_factor, timeout_s=timeout_s)
        closed = asyncio.Event()
        handle.listener = lambda: closed.set() if handle.closed else None
        self._after()
        await closed.wait()
        return handle

    def respond(self, event: SerfEvent, payload: bytes) -> None:
        """Answer a QUERY event (QueryError: too late, twice, too large)."""
        if self.serf is not None and event.query is not None:
            self.serf.respond(event.query, payload, self._now())
            self._after()

    # ------------------------------------------------------------------ inputs

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    def _on_packet(self, src: Address, data: bytes) -> None:
        if self.serf is None or self._stopped:
            return
        self.serf.on_packet(src, data, self._now(), sealed=self.transport.last_packet_sealed or not self.keyring)
        self._after()

    async def _on_stream(self, src: Address, channel: int, payload: bytes) -> tuple[int, bytes]:
        if self.serf is None or self._stopped:
            return CHANNEL_ERROR, b"agent is shutting down"
        if channel == CHANNEL_GOSSIP:
            reply = self.serf.on_stream(src, payload, self._now())
            self._after()
            return CHANNEL_GOSSIP, reply
        self.transport.stats["bad_streams"] += 1
        return CHANNEL_ERROR, f"unknown stream channel {channel}".encode()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        serf = self.serf
        if serf is None or self._stopped:
            return
        start = self._now()
        gossip_before = serf.view().core.stats.get("gossip_packets", 0)
        try:
            serf.tick(start)
        except Exception:  # noqa: BLE001 - a bug in a timer: log it, keep the pool running
            self.memberlist_log.exception("memberlist: timer failed")
        if serf.view().core.stats.get("gossip_packets", 0) != gossip_before:
            self._metric("sample", "gossip", (self._now() - start) * 1000.0)
        self._after()

    # ------------------------------------------------------------------ outputs

    def _after(self) -> None:
        serf, loop = self.serf, self._loop
        if serf is None or loop is None or self._stopped:
            return
        for out in serf.take_outputs():
            if type(out) is Send:
                self.transport.send_packet(out.dest, out.data)
            elif type(out) is StreamRequest:
                self._spawn(self._stream(out), "gossip-push-pull")
        for event in serf.take_events():
            self._deliver(serf, event)
        for source, level, text in serf.take_logs():
            (self.serf_log if source == "serf" else self.memberlist_log).log(LOG_LEVELS.get(level, logging.INFO), text)
        if serf.is_shutdown and not self._stopped:
            self.memberlist_log.debug("memberlist: closing the sockets of a member that has shut down")
            self._stopped = True
            loop.create_task(self.transport.stop(), name="gossip-shutdown")
            return
        view = serf.view()
        self._observe_probe(view)
        self._pump_counters(view)
        self._arm_timer(serf, loop)

    def _arm_timer(self, serf: Serf, loop: asyncio.AbstractEventLoop) -> None:
        deadline = serf.next_deadline()
        if deadline is None or deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = loop.call_at(deadline, self._on_timer)

    async def _stream(self, req: StreamRequest) -> None:
        reply: bytes | None = None
        error = ""
        try:
            reply = await self.transport.request(req.dest, CHANNEL_GOSSIP, req.data, req.deadline - self._now())
        except StreamFailed as err:
            error = str(err)
            self.memberlist_log.debug("memberlist: push/pull with %s:%d failed: %s", req.dest[0], req.dest[1], err)
        refused = ""
        if self.serf is not None and not self._stopped:
            refused = self.serf.on_stream_reply(req.token, reply, self._now())
            self._after()
        fut = self._joins.pop(req.token, None)
        if fut is not None and not fut.done():
            fut.set_result((False, refused) if refused else self._join_outcome(reply, error))

    @staticmethod
    def _join_outcome(reply: bytes | None, error: str) -> tuple[bool, str]:
        if reply is None:
            return False, error or "no reply"
        try:
            msg = decode_stream(reply)
        except DecodeError as err:
            return False, f"bad reply: {err.reason}"
        if type(msg) is PushPull and msg.reply:
            return True, ""
        if type(msg) is StreamError:
            return False, msg.error
        return False, "unexpected reply"

    def _deliver(self, serf: Serf, event: SerfEvent) -> None:
        nameless = event.kind is SerfEventKind.USER or event.kind is SerfEventKind.QUERY
        member = serf.member(event.node) if not nameless else None
        name = EVENT_LOG_NAMES.get(event.kind, event.kind.value)
        addr = member.addr if member is not None else ""
        if event.kind is SerfEventKind.QUERY:
            self.serf_log.debug("serf: EventQuery: %s (ltime %d)", event.name, event.ltime)
        elif event.kind is SerfEventKind.USER:
            self.serf_log.debug("serf: EventUser: %s (ltime %d)", event.name, event.ltime)
        elif event.kind is SerfEventKind.MEMBER_UPDATE or member is None:
            self.serf_log.info("serf: %s: %s", name, event.node)
        else:
            self.serf_log.info("serf: %s: %s %s", name, event.node, addr)
        self._metric("counter", event.kind.value, 1)
        if self.snapshot is not None and not nameless:
            self.snapshot.record(event.kind.value, event.node, member)
        flaps = serf.view().flaps
        if flaps != self._flaps:
            self._metric("counter", "member-flap", flaps - self._flaps)
            self._flaps = flaps
        for callback in list(self._subscribers):
            try:
                callback(event, member)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not stop gossip
                self.serf_log.exception("serf: member event subscriber failed")

    # ------------------------------------------------------------------ metrics

    def _metric(self, kind: str, name: str, value: float) -> None:
        if self.metrics_sink is not None:
            self.metrics_sink(kind, name, value)

    def _pump_counters(self, view: SerfView) -> None:
        if self.metrics_sink is None:
            return
        sources = ((self.transport.stats, TRANSPORT_COUNTERS), (view.core.stats, CORE_COUNTERS),
                   (view.stats, SERF_COUNTERS))
        for stats, names in sources:
            for name in names:
                value = stats.get(name, 0)
                delta = value - self._counted.get(name, 0)
                if delta:
                    self._counted[name] = value
                    self.metrics_sink("counter", name, delta)

    def _observe_probe(self, view: SerfView) -> None:
        """Time each probe from its ping to its end (memberlist.probeNode)."""
        probe = view.core.probe_seq
        if probe == self._probe:
            return
        now = self._now()
        if self._probe is not None:
            self._metric("sample", "probe_node", (now - self._probe_started) * 1000.0)
        self._probe = probe
        self._probe_started = now

    async def _queue_sampler(self, serf: Serf) -> None:
        while True:
            view = serf.view()
            self._metric("sample", "queue_intent", view.intent_queue)
            self._metric("sample", "queue_event", view.event_queue)
            self._metric("sample", "queue_query", view.query_queue)
            await asyncio.sleep(QUEUE_CHECK_INTERVAL_S)

    # ------------------------------------------------------------------ member snapshot

    @staticmethod
    def _restore_clocks(serf: Serf, state: SnapshotState) -> None:
        """Serf's restore: clocks witness the snapshot's, old user events are not delivered again."""
        serf.restore_clocks(state.clock, state.event_clock, state.query_clock)

    @staticmethod
    async def _snapshot_ticker(serf: Serf, snapshot: MemberSnapshot) -> None:
        while True:
            view = serf.view()
            snapshot.tick(view.member_time, view.event_time, view.query_time)
            await asyncio.sleep(FLUSH_INTERVAL_S)

    async def _rejoin(self, previous: list[tuple[str, str]]) -> None:
        """Serf: try the members of the snapshot one at a time, in random order, until one answers."""
        order = list(previous)
        self.rng.shuffle(order)
        for name, address in order:
            self.serf_log.info("serf: Attempting re-join to previously known node: %s: %s", name, address)
            try:
                await self.join([address])
            except JoinError:
                continue
            self.serf_log.info("serf: Re-joined to previously known node: %s: %s", name, address)
            return
        self.serf_log.warning("serf: Failed to re-join any previously known node")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._loop is None:  # every caller runs after start() has set the loop
            raise RuntimeError("gossip driver not started")
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
