"""User events on the agent: Consul's `/v1/event/fire` and `/v1/event/list` over Serf user events.

How it works
------------
`fire` validates the request as Consul does (a name; a tag filter only with a service filter;
node, service and tag filters that compile as Go regular expressions: appliance/filter/regex.py),
gives the event a fresh UUID and version 1, encodes the whole record with msgpack (keys `ID`,
`n`, `p`, `nf`, `sf`, `tf`, `v`, as Consul's codec tags) and hands it to the gossip layer as a
Serf user event named `consul:event:<name>`. Serf stamps it with its event Lamport clock,
delivers it here and gossips it to every member of the pool (serf.py dedups and replays it to
late joiners).

Every delivered Serf user event with the `consul:event:` prefix comes back through `deliver`:
the record is decoded, its LTime set, and it is kept only if its filters match this agent (node
name; a local service whose name matches, and with a tag filter one of its tags). Kept events go
into a ring of the last `RING_SIZE` (256) events, in delivery order, like Consul's agent, and the
`("events",)` watch key is touched so blocking `/v1/event/list` requests wake up. `_rexec` (remote
exec) events are not kept: one whose filters match goes to `on_remote_exec` (appliance/rexec.py,
which runs it only when `disable_remote_exec = false`).

`index()` is Consul's special index for the event list: the XOR of the two 64-bit halves of the
last event's UUID (1 when there is none). It is not monotonic, so a blocking list waits while the
index *equals* the requested one.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack

from appliance.filter.regex import MAX_PROGRAM, GoRegexp, RegexError, compile_re2
from appliance.gossip.serf import SerfEventKind

EVENT_PREFIX = "consul:event:"  # Consul's Serf user-event name prefix
RING_SIZE = 256  # events an agent remembers (Consul's eventBuf)
USER_EVENT_VERSION = 1  # Consul's userEventMaxVersion
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
REMOTE_EXEC_NAME = "_rexec"
WATCH_KEY = "events"


class EventError(ValueError):
    """A user event request Consul refuses (the text is Consul's)."""


class GossipPool(Protocol):
    """What the book needs of the gossip driver (appliance/gossip/driver.py's GossipDriver)."""

    def user_event(self, name: str, payload: bytes, coalesce: bool) -> Any: ...

    def subscribe(self, callback: Callable[[Any, Any], None]) -> None: ...


@dataclass
class UserEventRecord:
    id: str
    name: str
    payload: bytes | None = None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = USER_EVENT_VERSION
    ltime: int = 0

    def to_json(self) -> dict[str, Any]:
        """Consul's UserEvent JSON (Payload base64, or null when there is none)."""
        return {
            "ID": self.id,
            "Name": self.name,
            "Payload": base64.b64encode(self.payload).decode("ascii") if self.payload else None,
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": self.version,
            "LTime": self.ltime,
        }

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"ID": self.id, "n": self.name, "v": self.version}
        if self.payload:
            doc["p"] = self.payload
        if self.node_filter:
            doc["nf"] = self.node_filter
        if self.service_filter:
            doc["sf"] = self.service_filter
        if self.tag_filter:
            doc["tf"] = self.tag_filter
        return msgpack.packb(doc, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> UserEventRecord:
        """EventError if the bytes are not an event record."""
        try:
            doc = msgpack.unpackb(data, raw=False, max_str_len=len(data), max_bin_len=len(data))
        except Exception as err:  # noqa: BLE001 - msgpack raises many types on garbage
            raise EventError(f"Failed to decode event: {type(err).__name__}") from None
        if not isinstance(doc, dict):
            raise EventError("Failed to decode event: not a map")
        payload = doc.get("p")
        strings = [doc.get(k, "") for k in ("ID", "n", "nf", "sf", "tf")]
        if (not all(isinstance(s, str) for s in strings) or not isinstance(doc.get("v", 0), int)
                or payload is not None and not isinstance(payload, bytes)):
            raise EventError("Failed to decode event: bad field")
        event_id, name, nf, sf, tf = strings
        if not _UUID.fullmatch(event_id):  # its index is read from the hex (uuid_to_index)
            raise EventError("Failed to decode event: bad ID")
        return cls(event_id, name, payload or None, nf, sf, tf, doc.get("v", 0))


def uuid_to_index(event_id: str) -> int:
    """Consul's uuidToUint64: XOR of the UUID's two 64-bit halves."""
    hexed = event_id.replace("-", "")
    return int(hexed[:16], 16) ^ int(hexed[16:32], 16)


def _compile(pattern: str, what: str, budget: list[int]) -> GoRegexp:
    try:
        return compile_re2(pattern, budget)
    except RegexError as err:
        raise EventError(f"Invalid {what} filter: {err}") from None


def validate(record: UserEventRecord) -> None:
    """Consul's validateUserEventParams (the filters are Go regexps, run by RE2: linear time)."""
    if not record.name:
        raise EventError("User event missing name")
    if record.tag_filter and not record.service_filter:
        raise EventError("Cannot provide tag filter without service filter")
    budget = [MAX_PROGRAM]  # the three filters share one program budget, as a filter= does
    if record.node_filter:
        _compile(record.node_filter, "node", budget)
    if record.service_filter:
        _compile(record.service_filter, "service", budget)
    if record.tag_filter:
        _compile(record.tag_filter, "tag", budget)


class AgentEvents:
    """This agent's user events: fire through the gossip sink, keep the last 256 delivered."""

    def __init__(self, node_name: str, services: Callable[[], Iterable[tuple[str, list[str]]]],
                 notify: Callable[[Iterable[str]], None] = lambda keys: None,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.node_name = node_name
        self.services = services  # () -> [(service name, tags)] of this agent's local services
        self.notify = notify
        self.new_id = new_id
        self.sink: GossipPool | None = None
        self._ring: list[UserEventRecord | None] = [None] * RING_SIZE
        self._next = 0
        self.decode_errors = 0
        self.filtered = 0
        self.on_remote_exec: Callable[[UserEventRecord], None] | None = None  # `_rexec` events that match

    def fire(self, name: str, payload: bytes | None = None, node: str = "", service: str = "",
             tag: str = "") -> UserEventRecord:
        """Validate and send an event; EventError with Consul's text if refused (HTTP 500)."""
        record = UserEventRecord(self.new_id(), name, payload or None, node, service, tag)
        validate(record)
        if self.sink is None:
            raise EventError("No gossip pool to send the event on")
        try:
            self.sink.user_event(EVENT_PREFIX + name, record.encode(), False)
        except ValueError as err:  # Serf's size limit and friends
            raise EventError(str(err)) from None
        return record

    def deliver(self, serf_name: str, payload: bytes, ltime: int) -> UserEventRecord | None:
        """A Serf user event reached this agent; returns the record if it was kept."""
        if not serf_name.startswith(EVENT_PREFIX):
            return None
        try:
            record = UserEventRecord.decode(payload)
        except EventError:
            self.decode_errors += 1
            return None
        record.ltime = ltime
        if not self.should_process(record):
            self.filtered += 1
            return None
        if record.name == REMOTE_EXEC_NAME:  # never kept in the list
            self.filtered += 1
            if self.on_remote_exec is not None:
                self.on_remote_exec(record)
            return None
        self._ring[self._next] = record
        self._next = (self._next + 1) % RING_SIZE
        self.notify((WATCH_KEY,))
        return record

    def should_process(self, record: UserEventRecord) -> bool:
        """Consul's shouldProcessUserEvent: the node filter, then a matching local service and tag.

        The filters come from any member of the pool: they are compiled (never cached) with the
        same RE2 limits as at fire time, and one that does not compile drops the event.
        """
        budget = [MAX_PROGRAM]
        try:
            if record.node_filter and not compile_re2(record.node_filter, budget).search(self.node_name):
                return False
            if record.service_filter:
                svc_re = compile_re2(record.service_filter, budget)
                tag_re = compile_re2(record.tag_filter, budget) if record.tag_filter else None
                for service, tags in self.services():
                    if not svc_re.search(service):
                        continue
                    if tag_re is None or any(tag_re.search(t) for t in tags):
                        return True
                return False
        except RegexError:
            return False
        return True

    def list(self, name: str = "") -> list[UserEventRecord]:
        """Kept events, oldest first, optionally only those called `name`."""
        ring, i = self._ring, self._next
        ordered = ring[i:] + ring[:i] if ring[i] is not None else ring[:i]
        return [e for e in ordered if e is not None and (not name or e.name == name)]

    def attach(self, gossip: GossipPool) -> None:
        """Use a gossip pool (GossipDriver): fire through it and keep the events it delivers."""
        if self.sink is gossip:
            return
        self.sink = gossip
        gossip.subscribe(self._on_serf_event)

    def _on_serf_event(self, event: Any, member: Any) -> None:
        if event.kind is SerfEventKind.USER:
            self.deliver(event.name, event.payload, event.ltime)

    @staticmethod
    def index(events: Sequence[UserEventRecord]) -> int:
        return uuid_to_index(events[-1].id) if events else 1

