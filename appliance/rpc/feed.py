"""The replica feed: a server's side of client agents' connections.

How it works
------------
A client agent keeps a read-only replica of the state store (appliance/client/replica.py). It
dials a server's RPC port and sends `FOLLOW [from_index, node name]`; the listener (listener.py)
hands that connection here, and the server answers on it with STREAM frames:

    [STREAM, "snapshot", index, data]     the whole store (state/snapshot.py) as of `index`
    [STREAM, "entries", [[index, cmd]]]   applied log entries in order; cmd is the msgpack
                                          command, or nil for an entry that only moves the index
                                          (Raft's no-op and configuration entries)
    [STREAM, "status", {...}]             the server's view of the cluster: leader id and
                                          address, its last contact with the leader (ms),
                                          the Raft configuration and peers

The feed watches the driver's applied entries (`RaftDriver.observers`) and keeps the most recent
ones in a backlog bounded by count and bytes. A client whose `from_index` is still covered by the
backlog gets the entries after it replayed; an older one, or a new one (`from_index` 0), gets a
snapshot first, so a new client's first state is complete, never a prefix. All servers apply
the same log with the same indexes, so a client that fails over carries on from its own applied
index on any server. A client ahead of a lagging server simply waits: entries at or below its
index are never sent twice.

Each connection has a bounded queue of entries waiting to be written. A client that falls more
than `SESSION_MAX_ENTRIES` entries (or `SESSION_MAX_BYTES`) behind has its queue dropped and gets
a fresh snapshot instead: memory stays bounded and a slow client never slows the server.

On the same connection the client sends requests, answered in order with the stream:

    [READ_INDEX, id, "", consistent]       -> [READ_INDEX_RESP, id, status, index]
    [FORWARD, id, "", command(, token)]    -> [FORWARD_RESP, id, status, result, index]

READ_INDEX is the leader's read index (`RaftDriver.cluster_read_index`: forwarded to the leader by
a server that is not it; with `consistent` the leader confirms its leadership with a heartbeat
round first). FORWARD proposes a write (forwarded to the leader) and answers with an index at or
after the write's, so the client can hold its answer until its replica has applied the write
(read-your-writes). Every answer to a write is queued after the entries this server applied
before it, so the client usually has the write already when the answer arrives.

With ACLs on, a forwarded write is authorized before it is proposed (`authorize`, built by the
server from appliance/acl/commands.py): the token is the frame's fifth field (none: anonymous),
resolved in this server's ACL tables and checked with the route table's authorizer (a follower
that would refuse first catches up with the leader's commit index and decides again; in a
secondary datacenter without token replication, a token it does not know is then resolved by the
primary, `authorize_remote`). A refusal
answers status "denied" with Consul's text (`Permission denied: ...` or `ACL not found`), and
nothing is proposed.

No token secret leaves the servers: a client agent resolves tokens by asking a server
(appliance/acl/remote.py), as Consul's do. The snapshot a client gets holds every token with its
`SecretID` replaced by its `AccessorID` (but the anonymous token, whose secret is `anonymous` for
everyone), and an ACL entry that carries a secret is sent rewritten
(`redact_entry`, decided from the server's store right after the entry applied): one that wrote
its token carries the token with the same replacement, which the client's FSM applies exactly as
the server did (each token's replacement is its own accessor, so no check a secret goes through
at apply answers differently); one the server refused is sent as a write the client's FSM
refuses too (deleting the anonymous token), so both move their index without a change. A client
never resolves a secret in its own tables.

No Connect CA private key leaves the servers either: a client agent's leaves are signed by a
server (appliance/http/handlers/connect_ca.py). The snapshot a client gets holds the CA's roots
and configuration without the roots' keys and without the operator's `PrivateKey` in the
configuration map, and a `connect_ca` entry is sent without them (`redact_ca`); the client's FSM
applies it as the server did (the keys decide nothing at apply), so its index stays in step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.acl.builtin import ANONYMOUS_ID
from appliance.acl.commands import PermissionDenied
from appliance.acl.resolve import ACLNotFound
from appliance.raft.messages import NotLeader, RaftError
from appliance.state.acl import AclTables
from appliance.state.commands import UndecodableCommand, decode_command, encode_command
from appliance.state.fsm import CommandError
from appliance.state.snapshot import snapshot

from .connection import read_frame
from .frames import MAX_REQUESTS_IN_FLIGHT, BadHeader, FrameError, Kind, decode_body, encode_frame

log = logging.getLogger("agent.server.rpc")

BACKLOG_MAX_ENTRIES = 4096
BACKLOG_MAX_BYTES = 32 << 20
SESSION_MAX_ENTRIES = 8192
SESSION_MAX_BYTES = 16 << 20
BATCH_ENTRIES = 512  # entries per STREAM frame ...
BATCH_BYTES = 4 << 20  # ... and bytes (one entry may be larger: a frame carries at least one)
STATUS_INTERVAL_S = 0.5
MAX_SESSIONS = 4096


def entry_size(data: bytes | None) -> int:
    return 16 + (len(data) if data else 0)


def batches(entries: list[tuple[int, bytes | None]]) -> list[list[list[Any]]]:
    """Split entries into STREAM frames of at most BATCH_ENTRIES entries and about BATCH_BYTES."""
    out: list[list[list[Any]]] = []
    batch: list[list[Any]] = []
    size = 0
    for index, data in entries:
        if batch and (len(batch) >= BATCH_ENTRIES or size + entry_size(data) > BATCH_BYTES):
            out.append(batch)
            batch, size = [], 0
        batch.append([index, data])
        size += entry_size(data)
    if batch:
        out.append(batch)
    return out


_REFUSED = encode_command({"Type": "acl", "Op": "token_delete", "ID": ANONYMOUS_ID})  # refused by every FSM


def _without_key(conf: Any) -> Any:
    """A CA configuration map without the operator's private key (any spelling of `PrivateKey`)."""
    if not isinstance(conf, dict):
        return conf
    return {k: v for k, v in conf.items() if str(k).replace("_", "").replace("-", "").lower() != "privatekey"}


def redact_ca(cmd: dict[str, Any]) -> dict[str, Any]:
    """A connect_ca command without private keys: the roots' `Keys` and the configuration's key."""
    out = {k: v for k, v in cmd.items() if k != "Keys"}
    conf = cmd.get("Config")
    if isinstance(conf, dict) and "Config" in conf:
        out["Config"] = {**conf, "Config": _without_key(conf["Config"])}
    return out


def redact_entry(tables: AclTables, index: int, data: bytes | None) -> bytes | None:
    """The entry as a client agent gets it: an ACL write that carries a token secret rewritten, a
    connect_ca command without private keys (see the module docstring); `tables` are the server's
    right after it applied the entry."""
    if data is None or (b"SecretID" not in data and b"connect_ca" not in data):
        return data
    try:
        cmd = decode_command(data)
    except UndecodableCommand:
        return data
    if cmd.get("Type") == "connect_ca":
        return encode_command(redact_ca(cmd)) if "Keys" in cmd or "Config" in cmd else data
    obj = cmd.get("Object")
    if cmd.get("Type") != "acl" or not isinstance(obj, dict) or "SecretID" not in obj:
        return data
    accessor = obj.get("AccessorID")
    written = tables.tokens.get(accessor) if isinstance(accessor, str) else None
    if accessor == ANONYMOUS_ID and written is not None and written.get("ModifyIndex") == index:
        return data  # its secret is everyone's ("anonymous")
    if written is not None and written.get("ModifyIndex") == index:
        return encode_command({**cmd, "Object": {**obj, "SecretID": accessor}})
    if cmd.get("Op") == "init":  # the built-ins were made; the token was not
        return encode_command({k: v for k, v in cmd.items() if k != "Object"})
    return _REFUSED


def redacted_tables(tables: AclTables) -> AclTables:
    """The ACL tables as a client agent's snapshot holds them: each token's secret replaced by its
    accessor, but the anonymous token's, which everyone knows (the other tables shared)."""
    out = AclTables()
    vars(out).update(vars(tables))
    out.tokens = {a: t if a == ANONYMOUS_ID else {**t, "SecretID": a} for a, t in tables.tokens.items()}
    out.rebuild()
    return out


def client_snapshot(store: Any) -> bytes:
    """The snapshot a client agent gets: the store's, without token secrets and CA private keys."""
    view = copy.copy(store)
    view.acl = redacted_tables(store.acl)
    view.connect = copy.copy(store.connect)
    view.connect.keys = {}
    if store.connect.ca_config is not None:
        view.connect.ca_config = {**store.connect.ca_config, "Config": _without_key(store.connect.ca_config["Config"])}
    return snapshot(view)


class Session:
    """One client agent's connection: its queue of entries, answers and status."""

    def __init__(self, feed: ReplicaFeed, writer: asyncio.StreamWriter, from_index: int, name: str) -> None:
        self.feed = feed
        self.writer = writer
        self.name = name
        self.cursor = from_index  # the highest index queued or known to the client
        self.entries: list[tuple[int, bytes | None]] = []
        self.entry_bytes = 0
        self.answers: list[bytes] = []
        self.need_snapshot = False
        self.in_flight = 0
        self.last_leader: Any = None
        self.status_at = 0.0
        self.wake = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.snapshots_sent = 0

    def push(self, index: int, data: bytes | None) -> None:
        if self.need_snapshot or index <= self.cursor:
            return
        if len(self.entries) >= SESSION_MAX_ENTRIES or self.entry_bytes >= SESSION_MAX_BYTES:
            self.resync()  # too far behind: a snapshot replaces the queue
            return
        self.entries.append((index, data))
        self.entry_bytes += entry_size(data)
        self.cursor = index
        self.wake.set()

    def resync(self) -> None:
        self.need_snapshot = True
        self.entries = []
        self.entry_bytes = 0
        self.wake.set()

    def answer(self, body: list[Any]) -> None:
        try:
            data = encode_frame(body)
        except (TypeError, ValueError):  # a result msgpack cannot carry: send its text
            data = encode_frame([*body[:3], str(body[3]), *body[4:]])
        self.answers.append(data)
        self.wake.set()

    async def write_loop(self) -> None:
        driver = self.feed.driver
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), STATUS_INTERVAL_S)
            self.wake.clear()
            w = self.writer
            if self.need_snapshot:
                self.need_snapshot = False
                index = driver.applied_index  # the store is exactly this index between awaits
                self.cursor = max(self.cursor, index)
                w.write(encode_frame([Kind.STREAM, "snapshot", index, client_snapshot(self.feed.store)]))
                self.snapshots_sent += 1
            entries, self.entries, self.entry_bytes = self.entries, [], 0
            for batch in batches(entries):
                w.write(encode_frame([Kind.STREAM, "entries", batch]))
            for data in self.answers:  # after the entries applied before them
                w.write(data)
            self.answers = []
            now = time.monotonic()
            leader = (driver.leader_id, driver.leader_address())
            if leader != self.last_leader or now - self.status_at >= STATUS_INTERVAL_S:
                self.last_leader, self.status_at = leader, now
                status = {**self.feed.status(), "last_contact_ms": driver.last_contact_ms}
                w.write(encode_frame([Kind.STREAM, "status", status]))
            await w.drain()

    def request(self, body: list[Any]) -> None:
        kind = body[0]
        fields = len(body)
        if kind not in (Kind.READ_INDEX, Kind.FORWARD) or not (fields == 4 or kind == Kind.FORWARD and fields == 5):
            raise FrameError(f"unexpected frame kind {kind!r} on a client connection")
        request_id = body[1]
        if type(request_id) is not int:
            raise FrameError("bad request id")
        if self.in_flight >= MAX_REQUESTS_IN_FLIGHT:
            status = "error", "too many requests in flight on this connection"
            answer_kind = Kind.READ_INDEX_RESP if kind == Kind.READ_INDEX else Kind.FORWARD_RESP
            self.answer([answer_kind, request_id, *status, 0])
            return
        if kind == Kind.READ_INDEX:
            coro = self._read_index(request_id, bool(body[3]))
        else:
            if not isinstance(body[3], dict):
                raise FrameError("forwarded command is not a map")
            token = body[4] if len(body) == 5 else ""
            if not isinstance(token, str):
                raise FrameError("forwarded token is not a string")
            coro = self._forward(request_id, body[3], token)
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.in_flight -= 1

    async def _read_index(self, request_id: int, consistent: bool) -> None:
        try:
            status, value = "ok", await self.feed.driver.cluster_read_index(consistent)
        except NotLeader:
            status, value = "notleader", ""
        except (RaftError, TimeoutError) as err:
            status, value = "error", str(err) or "read index timed out"
        self.answer([Kind.READ_INDEX_RESP, request_id, status, value])

    async def _refused(self, authorize: Callable[[dict[str, Any], str], None], command: dict[str, Any],
                       token: str) -> str:
        """Consul's text if the token may not make this write, else "". A follower decides a
        refusal again once it has applied the leader's commit index: a token or policy written a
        moment ago may not have reached it yet (Consul authorizes writes on the leader). A token
        still unknown then goes to the primary datacenter when this is a secondary without token
        replication (`authorize_remote`)."""
        refusal = _check(authorize, command, token)
        driver = self.feed.driver
        if refusal is not None and not driver.is_leader:
            try:
                await driver.wait_applied(await driver.cluster_read_index(False))
                refusal = _check(authorize, command, token)
            except (RaftError, TimeoutError):
                pass
        remote = self.feed.authorize_remote
        if isinstance(refusal, ACLNotFound) and remote is not None:
            try:
                await remote(command, token)
                return ""
            except (PermissionDenied, ACLNotFound) as err:
                return str(err)
        return "" if refusal is None else str(refusal)

    async def _forward(self, request_id: int, command: dict[str, Any], token: str) -> None:
        driver = self.feed.driver
        index = 0
        authorize = self.feed.authorize
        if authorize is not None:
            refused = await self._refused(authorize, command, token)
            if refused:
                self.answer([Kind.FORWARD_RESP, request_id, "denied", refused, 0])
                return
        try:
            value = await driver.propose(command)
            status = "ok"
            # an index at or after the write's: this server's own if it leads (the write is
            # applied here), else the leader's commit index, which covers the write
            index = driver.applied_index if driver.is_leader else await driver.cluster_read_index(False)
        except CommandError as err:
            status, value = "command", str(err)
        except NotLeader:
            status, value = "notleader", ""
        except (RaftError, TimeoutError) as err:
            status, value = "error", str(err) or "the write timed out"
        self.answer([Kind.FORWARD_RESP, request_id, status, value, index])


def _check(authorize: Callable[[dict[str, Any], str], None], command: dict[str, Any],
           token: str) -> PermissionDenied | ACLNotFound | None:
    try:
        authorize(command, token)
        return None
    except (PermissionDenied, ACLNotFound) as err:
        return err


class ReplicaFeed:
    """Streams the applied log to client agents (see the module docstring)."""

    def __init__(self, driver: Any, store: Any,
                 authorize: Callable[[dict[str, Any], str], None] | None = None) -> None:
        self.driver = driver
        self.store = store
        self.authorize = authorize  # with ACLs: (command, secret) -> None or PermissionDenied/ACLNotFound
        # a secondary datacenter without token replication: the same check with the primary's answer
        self.authorize_remote: Callable[[dict[str, Any], str], Awaitable[None]] | None = None
        self.backlog: collections.deque[tuple[int, bytes | None]] = collections.deque()
        self.backlog_bytes = 0
        self.base: int | None = None  # the backlog holds every entry after this index
        self.sessions: set[Session] = set()
        self.garbage_frames = 0
        self._writers: set[asyncio.StreamWriter] = set()
        driver.observers.append(self.observe)

    def observe(self, kind: str, index: int, data: bytes | None) -> None:
        """Called by the driver after each applied entry and after a snapshot restore."""
        if kind == "restore":
            self.backlog.clear()
            self.backlog_bytes = 0
            self.base = index
            for s in self.sessions:
                s.resync()
            return
        if self.base is None:
            self.base = index - 1  # entries are applied one index at a time
        data = redact_entry(self.store.acl, index, data)
        self.backlog.append((index, data))
        self.backlog_bytes += entry_size(data)
        while len(self.backlog) > BACKLOG_MAX_ENTRIES or self.backlog_bytes > BACKLOG_MAX_BYTES:
            dropped, old = self.backlog.popleft()
            self.backlog_bytes -= entry_size(old)
            self.base = dropped
        for s in self.sessions:
            s.push(index, data)

    def status(self) -> dict[str, Any]:
        d = self.driver
        if d.core is None:
            return {"server": d.node_id, "leader": "", "leader_addr": "", "configuration": {"Servers": [],
                    "Index": 0}, "peers": []}
        return {"server": d.node_id, "leader": d.leader_id, "leader_addr": d.leader_address(),
                "configuration": d.configuration(), "peers": d.peers()}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, follow: list[Any]) -> None:
        """Serve one client connection whose first frame was `follow`, until it closes."""
        try:
            _, from_index, name = follow
            if type(from_index) is not int or from_index < 0 or not isinstance(name, str):
                raise ValueError
        except ValueError:
            self.garbage_frames += 1
            writer.close()
            return
        if len(self.sessions) >= MAX_SESSIONS:
            log.warning("refusing client %s: %d client connections already", name, MAX_SESSIONS)
            writer.close()
            return
        session = Session(self, writer, from_index, name)
        if self.base is None or from_index == 0 or from_index < self.base:
            session.need_snapshot = True  # a new client gets the whole state in one frame
        else:
            for index, data in self.backlog:
                session.push(index, data)
        session.wake.set()  # the snapshot (or the replay) and the status go out at once
        self.sessions.add(session)
        self._writers.add(writer)
        log.debug("client %s follows from index %d", name, from_index)
        write_task = asyncio.get_running_loop().create_task(session.write_loop(), name=f"feed-{name}")
        read_task = asyncio.get_running_loop().create_task(self._read_loop(session, reader), name=f"feed-in-{name}")
        try:
            await asyncio.wait({write_task, read_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.sessions.discard(session)
            self._writers.discard(writer)
            for task in (write_task, read_task, *session.tasks):
                task.cancel()
            for task in (write_task, read_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            writer.close()

    async def _read_loop(self, session: Session, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, OSError):
            while True:
                try:
                    data = await read_frame(reader)
                except BadHeader:
                    self.garbage_frames += 1
                    return
                try:
                    session.request(decode_body(data))  # KV keys' bytes kept (frames.py)
                except (FrameError, ValueError, TypeError):
                    self.garbage_frames += 1

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
