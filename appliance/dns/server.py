"""The DNS server: UDP and TCP listeners, the wire answer cache, and forwarding to recursors.

How it works
------------
Every listener hands the raw query to `DNSServer.answer(data, tcp)`:

1. The **answer cache** maps the query bytes after the 2-byte ID (flags, counts, the question as
   sent, the EDNS0 OPT record with its UDP size) to packed replies without their ID; a hit costs
   one dict lookup and a bytes concatenation that patches the ID back in. One table per transport,
   since UDP replies are trimmed and TCP ones are not. The key is the exact question, so `WEB` and
   `web` are cached apart and each reply echoes the case it was asked in.
   In a batched UDP read (appliance/dns/mmsg.py) a hit does not go through `answer` at all:
   `hit(key)` takes the bytes after the ID straight from the receive buffer and the reply is
   the query's own ID followed by the cached bytes, written into the send buffer; the hits are
   counted, and timed for `consul.dns.*_query`, once per batch (`hits_done`, `on_hits`).
2. Each entry remembers the state-store watch keys its answer read (`svc:web`, `node:n1`, ...)
   and the store index it was built at. While `store.last_index` has not moved, the entry is
   current; when it has, the entry is still current if none of its own keys moved. So a catalog
   change is visible in the very next answer, and a KV write does not flush service answers.
3. Answers with several instances are shuffled on every build. An entry keeps up to
   `SHUFFLE_VARIANTS` differently shuffled replies, built on the first queries, and hands them
   out in turn, so cached answers still spread clients over the instances.
4. A miss runs the sans-IO `Answerer` (appliance.dns.answers). A lookup of another datacenter's
   node or service is fetched through `fetch_remote(dc, kind, name)` (the agent's: a request to
   that datacenter's catalog over server RPC, appliance/federation/forward.py) within
   `REMOTE_TIMEOUT_S`, and answered with `Answerer.respond_remote`; never cached. A prepared
   query lookup is run by `run_query` (the HTTP API's execute, with the asker's address for
   `Near: "_ip"`) and answered the same way. A reply that asks for recursion
   is forwarded: UDP first, then TCP when the UDP answer came back truncated and the client is on
   TCP; the next recursor on a timeout (`recursor_timeout`), an error or a rcode other than
   NOERROR/NXDOMAIN; SERVFAIL when all fail. A recursor that is this server is dropped at start.

The UDP listener is a raw socket read from the asyncio event loop (`loop.add_reader`): it answers
inside the callback, with no task per packet, and drains every queued datagram per wake-up. That
is measured to matter for this hot path (see `_UDPListener` and BENCHMARKS.md). TCP
connections take length-prefixed, pipelined queries answered in order, with a connection cap
and an idle timeout. `CAIRN_DNS_CACHE_ENTRIES` (default 10000; 0 turns the cache off, for
benchmarks) sizes the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.dns import mmsg
from appliance.dns.acl_view import DNSTokens
from appliance.dns.answers import Answerer, settings_from_config
from appliance.dns.answers_wire import error_reply
from appliance.dns.names import NOERROR, NXDOMAIN, SERVFAIL, Request
from appliance.lifecycle import TASK_STATUS_IGNORED, TaskStatus
from appliance.state.store import Store
from appliance.telemetry.edges import is_ptr_query

log = logging.getLogger("agent.dns")
agent_log = logging.getLogger("agent")

SHUFFLE_VARIANTS = 6
MAX_CACHE_KEY = 512
CACHE_MAX_BYTES = 32 << 20  # replies and keys of both tables together
MAX_CACHED_REPLY = 16384
MAX_TCP_CONNS = 512
TCP_IDLE_S = 10.0
MAX_FORWARDS = 256  # concurrent recursor queries; more are dropped (clients retry)
UDP_RCVBUF = 4 << 20
UDP_BATCH = 64
REMOTE_TIMEOUT_S = 10.0  # another datacenter's answer; DNS clients give up about then


def default_cache_entries() -> int:
    try:
        return max(0, int(os.environ.get("CAIRN_DNS_CACHE_ENTRIES", "10000")))
    except ValueError:
        return 10000


@dataclass(slots=True)
class _Entry:
    deps: tuple[str, ...]
    built: int  # store.last_index when the first variant was built
    checked: int  # store.last_index when last found current
    want: int  # variants to keep (1 unless shuffled)
    variants: list[bytes] = field(default_factory=list)
    turn: int = 0
    size: int = 0  # bytes of key and variants, for the cache's byte budget
    ptr: bool = False  # a reverse lookup (counted as consul.dns.ptr_query)


def parse_recursor(text: str) -> tuple[str, int]:
    """`8.8.8.8`, `1.1.1.1:53`, `[::1]:5353` or `::1` -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, 53


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _UDPForward(asyncio.DatagramProtocol):
    def __init__(self, want_id: int) -> None:
        self.want_id = want_id
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        answer = len(data) >= 12 and data[:2] == struct.pack("!H", self.want_id) and data[2] & 0x80
        if answer and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class _UDPListener:
    """Reads a UDP socket straight from the event loop, answering every datagram queued.

    asyncio's datagram transport reads one datagram per loop wake-up; a query burst then costs a
    trip through the loop per query. Reading until the socket is empty (at most UDP_BATCH per
    wake-up, so TCP and timers still get their turn) and answering inline measured about 1.5x
    the queries/s of a DatagramProtocol on the cached path (BENCHMARKS.md, DNS). On Linux the
    queued datagrams are read with one recvmmsg and answered with one sendmmsg
    (appliance/dns/mmsg.py; `CAIRN_DNS_NO_MMSG=1` reads one at a time, for comparison).
    """

    def __init__(self, server: DNSServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        self.loop = asyncio.get_running_loop()
        batched = mmsg.reader(sock, UDP_BATCH, server, self._forward)
        self.loop.add_reader(sock.fileno(), batched or self._ready)

    def _forward(self, reply: Any, data: bytes, addr: tuple[str, int]) -> None:
        """Answer a query that needs a recursor, another datacenter or a prepared query."""
        reply.source = addr[0]  # the asker, for a prepared query's Near "_ip"
        sock = self.sock
        self.server.spawn_forward(reply, data, lambda out: sock.sendto(out, addr))

    def _ready(self) -> None:
        sock = self.sock
        answer = self.server.answer
        for _ in range(UDP_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier send, reported on this socket
            try:
                out = answer(data, False)
                if out.__class__ is bytes:
                    sock.sendto(out, addr)
                elif out is not None:
                    self._forward(out, data, addr)
            except OSError:
                pass  # send buffer full or peer gone: UDP may lose a reply, the client retries
            except Exception as err:  # noqa: BLE001 - never let one packet stop the listener
                log.error("DNS query failed: error=%r", err)

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


class DNSServer:
    def __init__(self, store: Store, config: Any, *, rng: random.Random | None = None,
                 cache_entries: int | None = None) -> None:
        self.store = store
        self.rng = rng or random.Random()
        self.cache_entries = default_cache_entries() if cache_entries is None else cache_entries
        self._caches: tuple[dict[bytes, _Entry], dict[bytes, _Entry]] = ({}, {})  # udp, tcp
        self._udp: list[_UDPListener] = []
        self._tcp: list[asyncio.AbstractServer] = []
        self._tcp_conns: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.bound: list[tuple[str, int]] = []
        self._cache_bytes = 0
        self.stats = {"queries": 0, "cache_hits": 0, "forwarded": 0, "dropped": 0, "servfail": 0}
        self.recursors: list[tuple[str, int]] = []
        # async (dc, kind, name) -> that datacenter's answer; raises with "No path to datacenter"
        # in the text for an unknown one (set by the agent; None: every other datacenter is unknown)
        self.fetch_remote: Any = None
        # async (query name, dc, client IP) -> the execute response of a prepared query, None for
        # no such query (set by the agent: appliance/http/handlers/query.py run_for_dns)
        self.run_query: Any = None
        # kind -> the agent's ACL token of that kind now (set by the agent: tokens set over the API
        # at run time count); None: the configured tokens
        self.agent_tokens: Callable[[str], str] | None = None
        self._cached_for = ""  # the DNS token the cached answers were built with (ACLs on)
        self._hits = [0, 0]  # fast-path hits of the batch being answered: [domain, ptr]
        # (domain hits, ptr hits, seconds spent on them) -> None: the DNS timings (set by
        # telemetry.instrument_dns); None: hits are only counted in `stats`
        self.on_hits: Callable[[int, int, float], None] | None = None
        self.configure(config)

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Any) -> None:
        """Apply (re)loaded settings: new answerer and recursors, and an empty cache."""
        self.config = config
        self.answerer = Answerer(settings_from_config(config))
        self.acl = DNSTokens(config, self._agent_token)  # with ACLs on, answers show what the DNS token may read
        self.recursor_timeout_s = config.dns_config.recursor_timeout_s or 2.0
        self.recursor_strategy = getattr(config.dns_config, "recursor_strategy", "sequential")
        self.recursors = []
        for text in config.recursors:
            try:
                host, port = parse_recursor(text)
            except ValueError:
                agent_log.warning("Ignoring invalid DNS recursor: %s", text)
                continue
            if self._is_self(host, port, config):
                agent_log.warning("Ignoring DNS recursor that points at this DNS server: %s", text)
                continue
            self.recursors.append((host, port))
        self._clear_caches()

    def _agent_token(self, kind: str) -> str:
        return self.agent_tokens(kind) if self.agent_tokens is not None else self.config.acl.tokens.get(kind, "")

    def _clear_caches(self) -> None:
        for cache in self._caches:
            cache.clear()
        self._cache_bytes = 0

    @staticmethod
    def _is_self(host: str, port: int, config: Any) -> bool:
        if port != config.ports.dns:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        for addr in config.listen_addrs("dns"):
            try:
                bound = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if bound == ip or (bound.is_unspecified and (ip.is_loopback or ip.is_unspecified)):
                return True
        return False

    # ------------------------------------------------------------------ answering

    def answer(self, data: bytes, tcp: bool) -> Any:
        """Packed reply bytes, a Reply that asks to forward, or None to drop."""
        self.stats["queries"] += 1
        self._token_check()
        cache = self._caches[tcp]
        key = data[2:]
        entry = self._current(cache, key)
        if entry is not None and len(entry.variants) >= entry.want:
            self.stats["cache_hits"] += 1
            entry.turn = turn = (entry.turn + 1) % entry.want
            return data[:2] + entry.variants[turn]
        store = self.store
        now = time.time()
        reply = self.answerer.respond(data, self.acl.view(store, now), self.rng, now, tcp=tcp)
        if reply.error:
            self.stats["servfail"] += 1
            log.error("DNS answer failed: error=%s", reply.error)
        if reply.wire is None:
            if reply.forward is None and reply.remote is None:
                self.stats["dropped"] += 1
                return None
            return reply
        if (reply.deps is not None and self.cache_entries and len(key) <= MAX_CACHE_KEY
                and len(reply.wire) <= MAX_CACHED_REPLY):
            if entry is None:
                want = SHUFFLE_VARIANTS if reply.shuffled else 1
                entry = cache[key] = _Entry(reply.deps, store.last_index, store.last_index, want, size=len(key),
                                            ptr=is_ptr_query(data))
                self._cache_bytes += len(key)
            entry.variants.append(reply.wire[2:])
            entry.size += len(reply.wire)
            self._cache_bytes += len(reply.wire)
            while (len(cache) > self.cache_entries or self._cache_bytes > CACHE_MAX_BYTES) and len(cache) > 1:
                oldest = next(iter(cache))
                self._cache_bytes -= cache.pop(oldest).size
        return reply.wire

    def _token_check(self) -> None:
        if self.acl.enabled and self.acl.secret != self._cached_for:  # the DNS token changed at run time
            self._cached_for = self.acl.secret
            self._clear_caches()

    def _current(self, cache: dict[bytes, _Entry], key: bytes) -> _Entry | None:
        """The cache entry for `key` while the store data its answer read has not moved."""
        entry = cache.get(key)
        if entry is not None:
            store = self.store
            if entry.checked != store.last_index:
                if entry.deps and store.index_of(*entry.deps, *self.acl.deps) > entry.built:
                    del cache[key]
                    self._cache_bytes -= entry.size
                    return None
                entry.checked = store.last_index
        return entry

    def hit(self, key: bytes) -> bytes | None:
        """A batched UDP read's fast path: the cached reply, without its ID, to the query whose
        bytes after the ID are `key`; None when it is not a cache hit (then `answer` it). Hits are
        counted here and reported by `hits_done` once per batch."""
        entry = self._caches[0].get(key)
        if entry is None:
            return None
        acl = self.acl
        if acl.enabled and acl.secret != self._cached_for:
            return None  # answer() clears the cache first
        if entry.checked != self.store.last_index and self._current(self._caches[0], key) is None:
            return None
        variants, want = entry.variants, entry.want
        if len(variants) < want:
            return None
        self._hits[entry.ptr] += 1
        entry.turn = turn = (entry.turn + 1) % want
        return variants[turn]

    def hits_done(self, elapsed_s: float) -> None:
        """Count the hits of one batch (`hit`): in the server's stats and, through `on_hits`, in
        the DNS timings (`elapsed_s` is the time the batch spent on them)."""
        hits = self._hits
        domain, ptr = hits
        if domain or ptr:
            hits[0] = hits[1] = 0
            self.stats["queries"] += domain + ptr
            self.stats["cache_hits"] += domain + ptr
            if self.on_hits is not None:
                self.on_hits(domain, ptr, elapsed_s)

    # ------------------------------------------------------------------ recursors

    def spawn_forward(self, reply: Any, data: bytes, send: Any) -> None:
        if len(self._tasks) >= MAX_FORWARDS:
            self.stats["dropped"] += 1
            return
        task = asyncio.get_running_loop().create_task(self._forward_and_send(reply, data, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward_and_send(self, reply: Any, data: bytes, send: Any) -> None:
        out = await self.resolve(reply, data, tcp=False)
        if out is not None:
            with contextlib.suppress(OSError):
                send(out)

    async def resolve(self, reply: Any, data: bytes, *, tcp: bool) -> bytes | None:
        """The answer to a reply that could not be built here: another datacenter's, or the recursors'."""
        if reply.remote is not None:
            return await self.remote(reply, data, tcp=tcp)
        return await self.forward(reply.forward, data, tcp=tcp)

    async def remote(self, reply: Any, data: bytes, *, tcp: bool) -> bytes | None:
        """Ask the lookup's datacenter, then answer from what it said (see the module docstring)."""
        lookup = reply.remote
        found, failed = None, ""
        self.stats["remote"] = self.stats.get("remote", 0) + 1
        fetch = self.fetch_remote
        if lookup.kind == "query":  # prepared queries are run through the HTTP API's execute
            fetch = None if self.run_query is None else (
                lambda dc, kind, name: self.run_query(name, dc, reply.source))
        if fetch is None:
            failed = "no-path"
        else:
            try:
                async with asyncio.timeout(REMOTE_TIMEOUT_S):
                    found = await fetch(lookup.dc, lookup.kind, lookup.name)
            except Exception as err:  # noqa: BLE001 - the other datacenter's trouble is a SERVFAIL here
                failed = "no-path" if "No path to datacenter" in str(err) else str(err) or type(err).__name__
                if failed != "no-path":
                    log.warning("DNS lookup in another datacenter failed: datacenter=%s error=%s", lookup.dc, failed)
        out = self.answerer.respond_remote(reply.request, lookup, found, self.rng, time.time(), tcp=tcp, failed=failed)
        if out.error:
            self.stats["servfail"] += 1
            log.error("DNS answer failed: error=%s", out.error)
        return out.wire

    async def forward(self, req: Request, data: bytes, *, tcp: bool) -> bytes | None:
        """Ask the recursors; their NOERROR/NXDOMAIN answer with the client's ID, else SERVFAIL."""
        self.stats["forwarded"] += 1
        order = list(self.recursors)
        if self.recursor_strategy == "random":
            self.rng.shuffle(order)
        for host, port in order:
            qid = self.rng.getrandbits(16)
            query = struct.pack("!HH", qid, struct.unpack_from("!H", data, 2)[0] | 0x0100) + data[4:]
            try:
                resp = await self._ask_udp(host, port, query)
                if resp[2] & 0x02 and tcp:
                    resp = await self._ask_tcp(host, port, query)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, struct.error) as err:
                log.debug("recursor failed: address=%s error=%r", _hostport(host, port), err)
                continue
            if len(resp) < 12 or resp[:2] != query[:2] or resp[3] & 0x0F not in (NOERROR, NXDOMAIN):
                continue
            return data[:2] + bytes([resp[2], resp[3] | 0x80]) + resp[4:]
        log.error("all resolvers failed for question")
        return error_reply(req, SERVFAIL, bool(self.recursors))

    async def _ask_udp(self, host: str, port: int, query: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        qid = struct.unpack_from("!H", query)[0]
        transport, proto = await loop.create_datagram_endpoint(lambda: _UDPForward(qid), remote_addr=(host, port))
        try:
            transport.sendto(query)
            async with asyncio.timeout(self.recursor_timeout_s):
                return await proto.done
        finally:
            transport.close()

    async def _ask_tcp(self, host: str, port: int, query: bytes) -> bytes:
        async with asyncio.timeout(self.recursor_timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                resp = await reader.readexactly(size)
                if resp[:2] != query[:2]:
                    raise OSError("recursor answered with another ID")
                return resp
            finally:
                writer.close()

    # ------------------------------------------------------------------ listeners

    async def serve(self, addrs: list[str] | tuple[str, ...], port: int, *,
                    task_status: TaskStatus = TASK_STATUS_IGNORED) -> None:
        """Bind UDP and TCP on each address, report started with the bound (address, port)
        pairs, answer until cancelled, then close the listeners and connections."""
        try:
            await self._bind(addrs, port)
            task_status.started(list(self.bound))
            await asyncio.Event().wait()
        finally:
            await self._close()

    async def _bind(self, addrs: list[str] | tuple[str, ...], port: int) -> None:
        loop = asyncio.get_running_loop()
        for addr in addrs:
            info = await loop.getaddrinfo(addr, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = info[0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind(sockaddr)
            except OSError:
                sock.close()
                raise
            self._udp.append(_UDPListener(self, sock))
            bound_port = sock.getsockname()[1]
            agent_log.info("Started DNS server: address=%s network=udp", _hostport(addr, bound_port))
            server = await asyncio.start_server(self._tcp_client, addr, bound_port, reuse_address=True)
            self._tcp.append(server)
            self.bound.append((addr, bound_port))
            agent_log.info("Started DNS server: address=%s network=tcp", _hostport(addr, bound_port))

    async def _close(self) -> None:
        for listener in self._udp:
            listener.close()
        for server in self._tcp:
            server.close()
        for writer in list(self._tcp_conns):
            writer.close()
        forwards = list(self._tasks)
        for task in forwards:
            task.cancel()
        if forwards:
            await asyncio.wait(forwards, timeout=2.0)
        for server in self._tcp:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._udp, self._tcp = [], []

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tcp_conns) >= MAX_TCP_CONNS:
            writer.close()
            return
        self._tcp_conns.add(writer)
        try:
            while True:
                try:
                    async with asyncio.timeout(TCP_IDLE_S):
                        (size,) = struct.unpack("!H", await reader.readexactly(2))
                        data = await reader.readexactly(size)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                out = self.answer(data, True)
                if out is not None and out.__class__ is not bytes:
                    out.source = (writer.get_extra_info("peername") or ("",))[0]
                    out = await self.resolve(out, data, tcp=True)
                if out is None:
                    continue
                writer.write(struct.pack("!H", len(out)) + out)
                if writer.transport.get_write_buffer_size() > 65536:
                    await writer.drain()
        except Exception as err:  # noqa: BLE001 - one connection's trouble is not the server's
            log.debug("DNS TCP connection error: %r", err)
        finally:
            self._tcp_conns.discard(writer)
            writer.close()
