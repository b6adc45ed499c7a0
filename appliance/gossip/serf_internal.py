"""Serf's internal queries (`_serf_*`) and name-conflict resolution (pure; used by serf.py).

How it works
------------
`InternalQueries.handle(req)` answers the queries whose name starts with `_serf_`:

* `_serf_ping`: nothing to answer; the ack a sender asks for is the answer (Serf's reachability
  check);
* `_serf_conflict` (payload: a member name): every member except the named one answers with its
  record of that member, `[6]` + msgpack `[name, addr, port]` (nil when unknown);
* anything registered with `register(name, handler)`: the handler returns the response payload
  (or None for no response). The gossip driver registers the key operations here
  (`_serf_install-key`, `_serf_use-key`, `_serf_remove-key`, `_serf_list-keys`, key_manager.py),
  because applying one writes the keyring file.

Name conflicts (memberlist sees an alive message naming a known member at another address, not
reclaimable): about another member it is only logged (`serf: Name conflict for 'x' both a:p and
b:q are claiming`). About ourselves it is logged as an error and, when resolution is enabled
(Serf's default; Consul turns it off), `_serf_conflict` is asked of everyone: when the query
closes, we stay if at least `responses // 2 + 1` of the answers hold our own address and port,
otherwise the minority shuts this Serf down (`serf: minority in name conflict resolution, quiting
[m / n]`). One resolution runs at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from appliance.gossip.messages import Alive
from appliance.gossip.queries import INTERNAL_PREFIX, QueryEngine, QueryError, QueryHandle, QueryRequest, encode_payload
from appliance.gossip.serf_members import Member

PING_QUERY = INTERNAL_PREFIX + "ping"
CONFLICT_QUERY = INTERNAL_PREFIX + "conflict"
CONFLICT_RESPONSE = 6  # Serf's messageConflictResponseType
KeyHandler = Callable[[QueryRequest], bytes | None]


class InternalHost(Protocol):
    name: str
    members: dict[str, Member]
    queries: QueryEngine
    name_conflict_resolution: bool

    @property
    def local_address(self) -> tuple[str, int]: ...

    def log(self, source: str, level: str, text: str) -> None: ...

    def shutdown(self) -> None: ...


def encode_conflict_response(member: Member | None) -> bytes:
    return encode_payload(CONFLICT_RESPONSE, None if member is None else [member.name, member.addr, member.port])


def decode_conflict_response(payload: bytes) -> tuple[str, str, int] | None:
    """(name, addr, port) of an answer, None for 'not known'; ValueError if it is garbage."""
    if not payload or payload[0] != CONFLICT_RESPONSE:
        raise ValueError("Invalid conflict query response type")
    body: Any = msgpack.unpackb(payload[1:], raw=False)
    if body is None:
        return None
    if (type(body) is not list or len(body) != 3 or type(body[0]) is not str or type(body[1]) is not str
            or type(body[2]) is not int):
        raise ValueError("Failed to decode conflict query response")
    return body[0], body[1], body[2]


class InternalQueries:
    def __init__(self, host: InternalHost) -> None:
        self.host = host
        self.handlers: dict[str, KeyHandler] = {}
        self.resolving: QueryHandle | None = None
        self.outcomes: list[tuple[int, int]] = []  # (matching, responses) of each finished resolution

    def register(self, name: str, handler: KeyHandler) -> None:
        self.handlers[name] = handler

    def handle(self, req: QueryRequest) -> None:
        host = self.host
        if req.name == PING_QUERY:
            return
        if req.name == CONFLICT_QUERY:
            node = req.payload.decode("utf-8", "replace")
            if node == host.name:
                return  # never answer about ourselves
            host.log("serf", "debug", f"serf: Got conflict resolution query for '{node}'")
            self._respond(req, encode_conflict_response(host.members.get(node)))
            return
        handler = self.handlers.get(req.name)
        if handler is None:
            host.log("serf", "warning", f"serf: Unhandled internal query '{req.name}'")
            return
        payload = handler(req)
        if payload is not None:
            self._respond(req, payload)

    def _respond(self, req: QueryRequest, payload: bytes) -> None:
        try:
            self.host.queries.respond(req, payload)
        except QueryError as err:
            self.host.log("serf", "error", f"serf: failed to respond to {req.name} query: {err}")

    # ------------------------------------------------------------------ name conflicts

    def conflict(self, existing_name: str, existing: tuple[str, int], other: Alive, now: float) -> None:
        """memberlist's conflict delegate: `other` claims the name `existing_name` holds at `existing`."""
        host = self.host
        if existing_name != host.name:
            host.log("serf", "warning", f"serf: Name conflict for '{existing_name}' both {existing[0]}:{existing[1]} "
                                        f"and {other.addr}:{other.port} are claiming")
            return
        enabled = str(host.name_conflict_resolution).lower()
        host.log("serf", "error", f"serf: Node name conflicts with another node at {other.addr}:{other.port}. "
                                  f"Names must be unique! (Resolution enabled: {enabled})")
        if not host.name_conflict_resolution or self.resolving is not None:
            return
        try:
            handle = host.queries.start(CONFLICT_QUERY, host.name.encode("utf-8"), now)
        except QueryError as err:
            host.log("serf", "error", f"serf: Failed to start name resolution query: {err}")
            return
        self.resolving = handle
        handle.listener = self._resolution_progress

    def _resolution_progress(self) -> None:
        handle = self.resolving
        if handle is None or not handle.closed:
            return
        self.resolving = None
        host = self.host
        addr, port = host.local_address
        responses = matching = 0
        for payload in handle.responses.values():
            try:
                record = decode_conflict_response(payload)
            except Exception as err:  # noqa: BLE001 - a peer's garbage: Serf logs and skips it
                host.log("serf", "error", f"serf: {err}")
                continue
            responses += 1
            if record is not None and record[1] == addr and record[2] == port:
                matching += 1
        self.outcomes.append((matching, responses))
        if matching >= responses // 2 + 1:
            host.log("serf", "info", f"serf: majority in name conflict resolution [{matching} / {responses}]")
            return
        host.log("serf", "warning", f"serf: minority in name conflict resolution, quiting [{matching} / {responses}]")
        host.shutdown()
