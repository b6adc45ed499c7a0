"""The built-in proxy at work: its listeners, the bytes between them, and who may connect.

How it works
------------
One asyncio task tree per proxy (`Proxy.run`):

- watches of `/v1/agent/connect/ca/roots` and `/v1/agent/connect/ca/leaf/<service>` (blocking)
  rebuild the TLS contexts (appliance/connect/proxy/tls.py) whenever either changes; new
  handshakes use the newest, connections already up keep theirs;
- in `-sidecar-for`/`-proxy-id` mode a hash-blocking watch of `/v1/agent/service/<proxy id>`
  reconfigures the listeners whose settings changed (`apply`);
- the public listener accepts TCP, runs the TLS handshake as the server (the client certificate
  must chain to the CA roots), reads the client's SPIFFE URI and asks the agent
  (`POST /v1/agent/connect/authorize`) whether it may reach the proxied service; allowed
  connections are joined to the local app (`local_connect_timeout_ms`, 1 s by default);
- each upstream listener accepts plain TCP from the local app, looks up healthy instances of the
  upstream (`/v1/health/connect/<name>?passing`, or a prepared query with `connect=true`), tries
  them in random order (the next one when a dial, handshake or identity check fails), checks
  that the server's certificate names the upstream service, and joins the two;
- a blocking watch of the intentions that match the proxied service
  (`/v1/connect/intentions/match?by=destination`) re-authorizes every live inbound connection's
  source when they change and closes those now denied. Consul's own proxy decides only at the
  handshake (docs/compatibility.md); if the agent cannot answer that watch the proxy re-checks
  every half second instead.

Counters and gauges go to `Metrics` (appliance/connect/proxy/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.connect.proxy import tls
from appliance.connect.proxy.agent import AgentAPI, AgentError
from appliance.connect.proxy.config import ProxyConfig, Upstream, from_registration, service_uri_matches
from appliance.connect.proxy.metrics import Metrics

log = logging.getLogger("agent.proxy")

CHUNK = 256 * 1024
RECHECK_POLL_S = 0.5
LINGER_S = 2.0  # after a client ends its side of a TLS stream, how long its answer may take


@dataclass(eq=False)
class Conn:
    """A live inbound connection: who it came from and how to cut it."""

    source: str
    serial: str
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def abort(self) -> None:
        for w in self.writers:
            w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[int], None]) -> None:
    while True:
        data = await reader.read(CHUNK)
        if not data:
            return
        writer.write(data)
        count(len(data))
        await writer.drain()


async def _cancel(tasks: Iterable[asyncio.Future[Any]]) -> None:
    """Cancel the tasks and wait for them to end (whatever they end with)."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(BaseException):
            await t


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader,
                 asyncio.StreamWriter], a_to_b: Callable[[int], None], b_to_a: Callable[[int], None]) -> None:
    """Copy bytes both ways, then close both sides. A TLS side that ends has closed its connection
    (TLS here has no half-close): both are closed at once. A TCP side that ends its stream is
    passed on as a half-close to a TCP peer, whose answer still flows back; to a TLS peer, which
    cannot be half-closed, the answer has LINGER_S to arrive before both are closed."""
    ab = asyncio.ensure_future(_pump(a[0], b[1], a_to_b))
    ba = asyncio.ensure_future(_pump(b[0], a[1], b_to_a))
    # the task -> (the side whose stream it reads, the writer of the side it writes to)
    tasks = {ab: (a[1], b[1]), ba: (b[1], a[1])}
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = done.pop()
        source, dest = tasks[first]
        if pending and first.exception() is None and source.get_extra_info("ssl_object") is None:
            if dest.can_write_eof():
                with contextlib.suppress(OSError, RuntimeError):
                    dest.write_eof()
                await asyncio.wait(pending)
            else:
                await asyncio.wait(pending, timeout=LINGER_S)
    finally:
        await _cancel(tasks)
        for w in (a[1], b[1]):
            w.close()


class Proxy:
    def __init__(self, api: AgentAPI, config: ProxyConfig, *, metrics: Metrics | None = None,
                 rng: random.Random | None = None) -> None:
        self.api = api
        self.config = config
        self.metrics = metrics or Metrics()
        self.rng = rng or random.Random()
        self.contexts: tls.Contexts | None = None
        self.ready = asyncio.Event()  # TLS loaded and listeners up
        self.servers: dict[tuple[Any, ...], asyncio.Server] = {}
        self.inbound: set[Conn] = set()
        self._leaf: dict[str, Any] | None = None
        self._roots: dict[str, Any] | None = None
        self._tls_ready = asyncio.Event()
        self._recheck_now = asyncio.Event()

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        """Serve until cancelled; listeners close on the way out."""
        watches = [self.api.watch("/v1/agent/connect/ca/roots", self._on_roots)]
        if self.config.proxy_id:
            watches.append(self.api.watch(f"/v1/agent/service/{self.config.proxy_id}", self._on_registration,
                                          by_hash=True))
        tasks = [asyncio.ensure_future(w) for w in watches]
        tasks.append(asyncio.ensure_future(self._leaf_loop()))
        tasks.append(asyncio.ensure_future(self._intentions_loop()))
        try:
            await self._tls_ready.wait()
            await self.apply(self.config)
            self.ready.set()
            await asyncio.gather(*tasks)
        finally:
            await _cancel(tasks)
            for server in self.servers.values():
                server.close()
            for conn in list(self.inbound):
                conn.abort()

    async def _leaf_loop(self) -> None:
        """Watch the leaf of the current service (it changes only with a new registration)."""
        while True:
            service = self.config.service
            task = asyncio.ensure_future(self.api.watch(f"/v1/agent/connect/ca/leaf/{service}", self._on_leaf))
            while self.config.service == service and not task.done():
                await asyncio.sleep(0.5)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _on_leaf(self, leaf: Any) -> None:
        if isinstance(leaf, dict) and leaf.get("Service", self.config.service) == self.config.service:
            self._leaf = leaf
            self._rebuild()

    async def _on_roots(self, roots: Any) -> None:
        if isinstance(roots, dict):
            self._roots = roots
            self._rebuild()

    def _rebuild(self) -> None:
        if self._leaf is None or self._roots is None:
            return
        try:
            self.contexts = tls.build(self._leaf, self._roots)
        except (ssl.SSLError, ValueError, KeyError) as err:
            log.error("Failed to load TLS certificates: %s", err)
            return
        log.info("Loaded TLS identity: service=%s serial=%s roots=%s", self.config.service, self.contexts.serial,
                 ",".join(self.contexts.roots))
        self._tls_ready.set()

    async def _on_registration(self, svc: Any) -> None:
        if not isinstance(svc, dict):
            return
        try:
            config = from_registration(svc)
        except ValueError as err:
            log.error("Proxy registration unusable: %s", err)
            return
        if self._tls_ready.is_set():
            await self.apply(config)
        else:
            self.config = config

    # ------------------------------------------------------------------ listeners

    async def apply(self, config: ProxyConfig) -> None:
        """Start the listeners `config` needs that are not up, close those it no longer has."""
        self.config = config
        wanted: dict[tuple[Any, ...], Callable[[], Awaitable[asyncio.Server]]] = {}
        if config.public is not None and config.local_app is not None:
            host, port = config.public
            key = ("public", host, port, config.local_app, config.service)
            wanted[key] = functools.partial(asyncio.start_server, self._inbound, host or "0.0.0.0", port)
        for up in config.upstreams:
            wanted[("upstream", up)] = functools.partial(
                asyncio.start_server, functools.partial(self._upstream, up), up.bind_address, up.bind_port)
        for key in [k for k in self.servers if k not in wanted]:
            self.servers.pop(key).close()
            log.info("Stopped listener: %s", _describe(key))
        for key, start in wanted.items():
            if key in self.servers:
                continue
            try:
                self.servers[key] = await start()
            except OSError as err:
                log.error("Failed to start listener %s: %s", _describe(key), err)
                continue
            log.info("Started listener: %s", _describe(key))

    # ------------------------------------------------------------------ inbound

    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cfg, contexts = self.config, self.contexts
        dst = (("dst", cfg.service),)
        if contexts is None or cfg.local_app is None:
            writer.transport.abort()
            return
        try:
            await writer.start_tls(contexts.server, ssl_handshake_timeout=cfg.handshake_timeout_s)
        except (TimeoutError, ssl.SSLError, OSError, ConnectionError) as err:
            self.metrics.add("inbound_handshake_failures", dst)
            log.debug("inbound TLS handshake failed: %s", err)
            writer.transport.abort()
            return
        source, serial = tls.peer_identity(writer.get_extra_info("ssl_object"))
        allowed, reason = await self._authorize(source, serial)
        if not allowed:
            self.metrics.add("inbound_denied", dst)
            log.info("Connection from %s denied: %s", source or "(no URI)", reason)
            writer.transport.abort()
            return
        try:
            app = await asyncio.wait_for(asyncio.open_connection(*cfg.local_app), cfg.local_connect_timeout_s)
        except (TimeoutError, OSError) as err:
            log.error("failed to dial local app %s:%s: %s", *cfg.local_app, err)
            writer.transport.abort()
            return
        conn = Conn(source, serial, [writer, app[1]])
        self.inbound.add(conn)
        self.metrics.add("inbound_conns", dst)
        try:
            await splice((reader, writer), app, lambda n: self.metrics.add("inbound_rx_bytes", dst, n),
                         lambda n: self.metrics.add("inbound_tx_bytes", dst, n))
        finally:
            self.inbound.discard(conn)
            self.metrics.add("inbound_conns", dst, -1)

    async def _authorize(self, source: str, serial: str) -> tuple[bool, str]:
        if not source:
            return False, "peer certificate has no URI SAN"
        body = {"Target": self.config.service, "ClientCertURI": source, "ClientCertSerial": serial}
        try:
            answer, _ = await self.api.request("POST", "/v1/agent/connect/authorize", body=body, timeout=10)
        except AgentError as err:
            return False, f"connect: authz call failed: {err}"
        if not isinstance(answer, dict):
            return False, "connect: authz call failed: no answer"
        return bool(answer.get("Authorized")), str(answer.get("Reason", ""))

    async def recheck(self) -> int:
        """Re-authorize the source of every live inbound connection; close the denied ones."""
        by_source: dict[str, list[Conn]] = {}
        for conn in list(self.inbound):
            by_source.setdefault(conn.source, []).append(conn)
        closed = 0
        for source, conns in by_source.items():
            allowed, reason = await self._authorize(source, conns[0].serial)
            if allowed or reason.startswith("connect: authz call failed"):
                continue
            for conn in conns:
                log.info("Closing connection from %s: %s", source, reason)
                self.metrics.add("inbound_denied", (("dst", self.config.service),))
                conn.abort()
                closed += 1
        return closed

    async def _intentions_loop(self) -> None:
        index = ""
        while True:
            params = {"by": "destination", "name": self.config.service}
            if index:
                params.update(index=index, wait="60s")
            try:
                _, headers = await self.api.request("GET", "/v1/connect/intentions/match", params, timeout=90)
            except AgentError as err:
                log.debug("intentions watch: %s; re-checking by polling", err)
                await asyncio.sleep(RECHECK_POLL_S)
                await self.recheck()
                index = ""
                continue
            new = headers.get("X-Consul-Index", "")
            if new != index:
                index = new
                await self.recheck()
            if not new:
                await asyncio.sleep(RECHECK_POLL_S)

    # ------------------------------------------------------------------ upstreams

    async def _instances(self, up: Upstream) -> list[tuple[str, int, str]]:
        """(address, port, datacenter) of the instances an upstream may use now."""
        params = {"passing": "1", "stale": ""}
        if up.datacenter:
            params["dc"] = up.datacenter
        if up.dest_type == "prepared_query":
            found = (await self.api.get(f"/v1/query/{up.name}/execute", {"connect": "true"}) or {}).get("Nodes")
        else:
            found = await self.api.get(f"/v1/health/connect/{up.name}", params)
        out = []
        for csn in found or ():
            node, svc = csn.get("Node") or {}, csn.get("Service") or {}
            address = svc.get("Address") or node.get("Address") or ""
            if address and svc.get("Port"):
                out.append((address, int(svc["Port"]), node.get("Datacenter", "")))
        return out

    async def _dial(self, up: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            instances = await self._instances(up)
        except AgentError as err:
            log.error("upstream %s: discovery failed: %s", up.name, err)
            return None
        if not instances:
            log.error("upstream %s: no healthy instances found", up.name)
            return None
        self.rng.shuffle(instances)
        for address, port, dc in instances:
            contexts = self.contexts
            if contexts is None:
                return None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, port, ssl=contexts.client), up.connect_timeout_s)
            except (TimeoutError, OSError, ssl.SSLError) as err:
                log.warning("upstream %s: dial %s:%s failed: %s", up.name, address, port, err)
                continue
            uri, _ = tls.peer_identity(writer.get_extra_info("ssl_object"))
            if not service_uri_matches(uri, up.name, dc):
                log.warning("upstream %s: peer certificate mismatch got %s, want service %s", up.name, uri, up.name)
                writer.transport.abort()
                continue
            return reader, writer
        return None

    async def _upstream(self, up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        labels = (("dst", up.name), ("dst_type", up.dest_type), ("src", self.config.service))
        remote = await self._dial(up)
        if remote is None:
            self.metrics.add("upstream_dial_failures", labels)
            writer.transport.abort()
            return
        self.metrics.add("upstream_conns", labels)
        try:
            await splice((reader, writer), remote, lambda n: self.metrics.add("upstream_tx_bytes", labels, n),
                         lambda n: self.metrics.add("upstream_rx_bytes", labels, n))
        finally:
            self.metrics.add("upstream_conns", labels, -1)


def _describe(key: tuple[Any, ...]) -> str:
    if key[0] == "public":
        _, host, port, app, service = key
        return f"public {host or '0.0.0.0'}:{port} -> {app[0]}:{app[1]} (service {service})"
    up: Upstream = key[1]
    return f"{up.bind_address}:{up.bind_port} -> {up.dest_type}:{up.name}"
