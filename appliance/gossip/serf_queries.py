"""The Serf layer's side of queries, name conflicts, the merge check and its log lines: a mixin
that `Serf` (serf.py) inherits, so serf.py keeps member status, intents and user events.

How it works
------------
* queries: `query` starts one (queries.py), `respond` answers a QUERY event's request,
  `register_internal_query` adds a `_serf_<name>` handler (the driver's key operations);
  `deliver_query` sends `_serf_*` queries to serf_internal.py and the others out as QUERY events;
  `handle_query_message` is the core's delegate call for query, response and relay messages;
* name conflicts: the core calls `notify_conflict` when an alive message names a known member at
  another address (logged as memberlist does; serf_internal.py decides what follows);
* merge check (Consul's merge delegate): `check_alive` for one alive message, `check_merge` for a
  whole push-pull table, both against `merge_check([(name, tags), ...])`;
* log lines: `log` records (source, level, text) that `take_logs` hands to the driver, which logs
  them with the pool's serf or memberlist logger;
* `shutdown`: a lost conflict resolution stops this Serf (inputs are then ignored).

Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from appliance.gossip.core import GossipCore
from appliance.gossip.members import Address
from appliance.gossip.messages import Alive, PushNode, QueryMessage, QueryResponseMessage, RelayMessage, encode_message
from appliance.gossip.queries import INTERNAL_PREFIX, QUERY_SIZE_LIMIT, QueryEngine, QueryHandle, QueryRequest
from appliance.gossip.serf_internal import InternalQueries, KeyHandler
from appliance.gossip.serf_members import MemberStatus, SerfEvent, SerfEventKind

KEY_QUERIES = frozenset(INTERNAL_PREFIX + name for name in ("install-key", "use-key", "remove-key", "list-keys"))
MergeCheck = Callable[[list[tuple[str, dict[str, str]]]], str]  # [(name, tags)] -> why they may not join, or ""


class SerfQueryMixin:
    core: GossipCore
    queries: QueryEngine
    internal: InternalQueries
    stats: Counter[str]
    merge_check: MergeCheck | None
    is_shutdown: bool
    packet_sealed: bool
    state: MemberStatus
    _logs: list[tuple[str, str, str]]
    _events: list[SerfEvent]
    _tags_cache: dict[bytes, dict[str, str]]

    def _tags(self, meta: bytes) -> dict[str, str]:
        raise AssertionError("provided by Serf")

    def _cached_tags(self, meta: bytes) -> dict[str, str]:
        tags = self._tags_cache.get(meta)
        if tags is None:
            tags = self._tags(meta)
            if len(self._tags_cache) >= 4096:
                self._tags_cache.clear()
            self._tags_cache[meta] = tags
        return tags

    def take_logs(self) -> list[tuple[str, str, str]]:
        """Log lines Serf and memberlist would print: (source, level, text), for the driver to log."""
        out, self._logs = self._logs, []
        return out

    def log(self, source: str, level: str, text: str) -> None:
        self._logs.append((source, level, text))

    def shutdown(self) -> None:
        """Stop taking part (Serf's Shutdown: no leave, peers will see a failure)."""
        self.is_shutdown = True
        self.state = MemberStatus.LEFT

    @property
    def local_address(self) -> Address:
        return self.core.addr, self.core.port

    def query(self, name: str, payload: bytes, now: float, *, filter_nodes: list[str] | None = None,
              filter_tags: dict[str, str] | None = None, request_ack: bool = False, relay_factor: int = 0,
              timeout_s: float = 0.0) -> QueryHandle:
        """Start a query (queries.py); its handle collects acks and responses until the deadline."""
        return self.queries.start(name, payload, now, filter_nodes=filter_nodes, filter_tags=filter_tags,
                                  request_ack=request_ack, relay_factor=relay_factor, timeout_s=timeout_s)

    def respond(self, req: QueryRequest, payload: bytes, now: float) -> None:
        """Answer a QUERY event's request (QueryError: too late, twice, too large)."""
        self.core.now = now
        self.queries.respond(req, payload)

    def register_internal_query(self, name: str, handler: KeyHandler) -> None:
        """Answer `_serf_<name>` queries with `handler(request)` (its payload, or None: no answer)."""
        self.internal.register(INTERNAL_PREFIX + name, handler)

    def deliver_query(self, req: QueryRequest) -> None:
        if req.name.startswith(INTERNAL_PREFIX):
            self.internal.handle(req)
        else:
            self._events.append(SerfEvent(SerfEventKind.QUERY, "", self.core.now, req.name, req.payload, req.ltime,
                                          query=req))

    def handle_query_message(self, msg: QueryMessage | QueryResponseMessage | RelayMessage) -> None:
        if type(msg) is QueryMessage and not self.packet_sealed and msg.name in KEY_QUERIES:
            self.stats["key_queries_unsealed"] += 1  # not handled, not passed on
            self.log("serf", "warning", f"serf: ignoring {msg.name} query: keyring operations must be encrypted")
            return
        if type(msg) is QueryMessage:
            if self.queries.handle_query(msg):
                raw = encode_message(msg)
                if len(raw) <= QUERY_SIZE_LIMIT:  # a larger one no member could have sent: not passed on
                    self.queries.queue.queue(raw)
                else:
                    self.stats["queries_oversized"] += 1
        elif type(msg) is QueryResponseMessage:
            self.queries.handle_response(msg)
        elif type(msg) is RelayMessage:
            self.queries.handle_relay(msg)

    def notify_conflict(self, name: str, existing: Address, other: Alive, old_state: int) -> None:
        mine = f"{existing[0]}:{existing[1]}"
        self.log("memberlist", "error", f"memberlist: Conflicting address for {name}. Mine: {mine} "
                                        f"Theirs: {other.addr}:{other.port} Old state: {old_state}")
        self.internal.conflict(name, existing, other, self.core.now)

    def check_alive(self, msg: Alive) -> bool:
        """memberlist's alive delegate (Consul's merge delegate for one member): False = ignore it."""
        if self.merge_check is None:
            return True
        error = self.merge_check([(msg.node, self._cached_tags(msg.meta))])
        if error:
            self.stats["alive_refused"] += 1
            self.log("memberlist", "warning", f"memberlist: ignoring alive message for '{msg.node}': {error}")
            return False
        return True

    def check_merge(self, nodes: tuple[PushNode, ...]) -> str:
        """memberlist's merge delegate: why a push-pull's members may not be merged ("" if they may)."""
        if self.merge_check is None:
            return ""
        error = self.merge_check([(node.name, self._cached_tags(node.meta)) for node in nodes])
        if error:
            self.stats["merge_refused"] += 1
        return error

