"""Connect's certificate authority over HTTP (reference/connect.md §1.6-§1.10).

    GET /v1/connect/ca/roots                 the roots (blocking; ?pem=true: a PEM chain)
    GET /v1/connect/ca/configuration         the CA configuration (blocking)
    PUT /v1/connect/ca/configuration         a new configuration: maybe a root rotation
    GET /v1/agent/connect/ca/roots           the roots, as this agent caches them (blocking)
    GET /v1/agent/connect/ca/leaf/<service>  a leaf certificate for a service (blocking)
    PUT /v1/internal/connect/ca/sign         a server signs a CSR (Consul's ConnectCA.Sign RPC)
    AUTO_ENCRYPT on the server RPC port      `auto_encrypt_sign`: Consul's AutoEncrypt.Sign (a client
                                             agent's auto_encrypt certificate, appliance/rpc/autoencrypt.py)

The CA bootstraps on first use: when nothing is stored, the first request builds the first root
from the agent's `connect { ca_provider ca_config }` and proposes it (`init` wins only if no CA
is stored yet, so two agents racing store one). The cores are appliance/connect/ (ca.py,
authority.py, csr.py, leaf.py); the state is appliance/state/connect.py.

Leaf certificates are made as Consul makes them: the agent that is asked (per service name,
cached here: one `ConnectAgent` per HTTP context) makes a key pair of the active root's type (EC
P-256 by default, RSA when configured) and a CSR whose URI SAN is the service's SPIFFE ID; a
server signs the CSR (`sign_csr`) and never sees the private key. On a server that is this
agent's own `sign_csr`; a client agent sends the CSR to a server of its datacenter (`PUT
/v1/internal/connect/ca/sign`, with the request's token). `sign_csr` is the one signing path:
it authorizes by the CSR's SPIFFE ID (`service:write` on a service, `node:write` on an agent's
node), refuses a CSR of another datacenter or trust domain, applies CSRMaxPerSecond, takes a
serial number from the replicated counter and signs with the active root's key; each outcome is
counted (`consul.connect.ca.sign{result=signed|denied|invalid|rate_limited}`). A blocking
request (`?index=` the leaf's ModifyIndex) waits until the leaf is renewed (its soft expiry,
leaf.py) or the wait ends; a root rotation wakes it and the leaf is renewed within the jitter
window. The answer carries `X-Cache` (HIT when the cached leaf was served) and `Age`.

A client agent holds no CA private key (its replica has the roots without their keys,
appliance/rpc/feed.py), never receives a leaf's private key from anyone, and proposes none of
the CA's bookkeeping: the first root, serial numbers and pruning are the servers' (a client asks
a server for the roots when none is stored yet, which bootstraps the CA there), and the CA
configuration is read and written on a server.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.api.gojson import ANY, BOOL, STRING, DecodeError, Map, Struct, decode
from appliance.connect import authority, ca, csr, leaf, spiffe
from appliance.federation.forward import Exchange, ForwardError
from appliance.http.authz import acl_agent, deny, request_identity
from appliance.http.context import HTTPContext, park
from appliance.http.encoding import read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import LEAF_PREFIX, SIGN_PATH, path_tail
from appliance.http.query import blocking, query_options
from appliance.http.remote_dc import on_server
from appliance.http.values import Answer, Request, json_answer
from appliance.rpc.autoencrypt import ALLOW_TLS_OFF, AutoEncryptError
from appliance.state import watchkeys
from appliance.state.fsm import CommandError

if TYPE_CHECKING:
    from appliance.acl.resolve import Identity

CA_SIGN_REQUEST = Struct("structs.CASignRequest", {"CSR": STRING, "Datacenter": STRING}, ignored=("Token",))
CA_CONFIGURATION = Struct("structs.CAConfiguration", {
    "Provider": STRING, "Config": Map(ANY), "State": Map(STRING), "ForceWithoutCrossSigning": BOOL,
    "ClusterID": STRING,
}, ignored=("CreateIndex", "ModifyIndex"))


class ConnectAgent:
    """This agent's Connect state: the leaf cache and the locks that keep one issue per service."""

    def __init__(self, ctx: HTTPContext) -> None:
        self.cache = leaf.LeafCache()
        self.issuing: dict[str, asyncio.Lock] = {}
        self.signing = leaf.RateLimit()  # CSRMaxPerSecond
        self.intentions: tuple[int, list[dict[str, Any]]] | None = None  # (index, in evaluation order)
        self.loop_time = ctx.loop_time
        self.ca_lock = asyncio.Lock()
        self.clock: Callable[[], float] = time.time  # wall time: certificates carry it
        self.rng = ctx.rng


def connect_agent(ctx: HTTPContext) -> ConnectAgent:
    agent: ConnectAgent | None = ctx.connect
    if agent is None:
        agent = ctx.connect = ConnectAgent(ctx)
    return agent


async def propose(ctx: HTTPContext, cmd: dict[str, Any]) -> Any:
    try:
        return await ctx.consensus.propose(cmd)
    except CommandError as err:
        raise HTTPError(500, str(err)) from None


async def _serial(ctx: HTTPContext) -> tuple[int, int]:
    got = await propose(ctx, {"Type": "connect_ca", "Op": "serial"})
    return int(got["Serial"]), int(got["Index"])


def _uid(agent: ConnectAgent) -> str:
    return ca.compact_uid(agent.rng.getrandbits(64))


def on_client(ctx: HTTPContext) -> bool:
    """A client agent: the CA's keys and bookkeeping are the servers' (module docstring)."""
    return ctx.raft is None


async def _ask_server(ctx: HTTPContext, method: str, path: str, token: str, body: Any = None) -> Any:
    """`method path` on a server of this datacenter with `token`: the JSON answer, or its error."""
    headers = [("X-Consul-Token", token)] if token else []
    data = b"" if body is None else json.dumps(body).encode()
    try:
        answer = await ctx.federation.ask_server(Exchange(method, path, [], headers, data))
    except ForwardError as err:
        raise HTTPError(500, str(err)) from None
    if answer.status != 200:
        raise HTTPError(answer.status, answer.body.decode(errors="replace").strip())
    return json.loads(answer.body or b"null")


async def ensure_ca(ctx: HTTPContext) -> None:
    """Bootstrap the CA if none is stored yet (module docstring)."""
    tables = ctx.store.connect
    if on_client(ctx):
        if tables.ca_config is None:  # a server bootstraps it; the replica then holds its roots
            await _ask_server(ctx, "GET", "/v1/connect/ca/roots", "")
            await ctx.consensus.read_point("default")
        return
    if tables.ca_config is not None:
        await _prune(ctx)
        return
    agent = connect_agent(ctx)
    async with agent.ca_lock:
        if tables.ca_config is not None:
            return
        serial, _ = await _serial(ctx)
        try:
            cmd = authority.bootstrap(ctx.config.connect_ca_config, str(uuid.uuid4()), serial, agent.clock(),
                                      _uid(agent))
        except ca.CAError as err:
            raise HTTPError(500, f"could not initialize provider: {err}") from None
        if await propose(ctx, cmd):
            ctx.log.info("initialized primary datacenter CA with provider: provider=consul")


async def _prune(ctx: HTTPContext) -> None:
    """Drop the roots rotated out a leaf TTL ago (authority.prunable)."""
    ids = authority.prunable(ctx.store.connect, connect_agent(ctx).clock())
    if ids:
        await propose(ctx, {"Type": "connect_ca", "Op": "prune", "IDs": ids})


def _pem_param(req: Request) -> bool:
    if "pem" not in req.query:
        return False
    value = req.query["pem"]
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise HTTPError(400, "The 'pem' query parameter must be a boolean value")


async def roots(req: Request, ctx: HTTPContext) -> Answer:
    pem = _pem_param(req)
    await ensure_ca(ctx)
    tables = ctx.store.connect
    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(watchkeys.CONNECT_CA),
                                   keys=(watchkeys.CONNECT_CA,), render=lambda: authority.roots_body(tables))
    if pem:
        return Answer(200, headers, authority.roots_pem(tables).encode(), "application/pem-certificate-chain")
    return json_answer(req, body, headers=headers)


async def agent_roots(req: Request, ctx: HTTPContext) -> Answer:
    answer = await roots(req, ctx)
    answer.headers.update({"X-Cache": "HIT", "Age": "0"})
    return answer


async def configuration(req: Request, ctx: HTTPContext) -> Answer:
    if on_client(ctx):  # Consul's ConnectCA.ConfigurationGet: a server answers
        return await on_server(req, ctx)
    await ensure_ca(ctx)
    tables = ctx.store.connect
    body, headers = await blocking(req, ctx, index=lambda: ctx.store.index_of(watchkeys.CONNECT_CA),
                                   keys=(watchkeys.CONNECT_CA,), render=lambda: authority.config_body(tables))
    return json_answer(req, body, headers=headers)


async def set_configuration(req: Request, ctx: HTTPContext) -> Answer:
    if on_client(ctx):  # Consul's ConnectCA.ConfigurationSet: a server rotates
        return await on_server(req, ctx)
    raw = read_json(req)
    try:
        body = decode(raw, CA_CONFIGURATION) if raw is not None else {}
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None
    await ensure_ca(ctx)
    tables = ctx.store.connect
    if body.get("State"):
        raise HTTPError(400, "Provider State is read-only. It must be omitted or identical to the current value")
    agent = connect_agent(ctx)
    async with agent.ca_lock:
        first, _ = await _serial(ctx)
        second, _ = await _serial(ctx)
        try:
            cmd = authority.update(tables, body.get("Provider") or "", body.get("Config") or {},
                                   bool(body.get("ForceWithoutCrossSigning")), (first, second), agent.clock(),
                                   _uid(agent))
        except ca.CAError as err:
            raise HTTPError(500, str(err)) from None
        if cmd is not None:
            await propose(ctx, cmd)
            if "Roots" in cmd:
                ctx.log.info("CA rotated to new root under provider: provider=consul")
    return Answer(200, None, b"")


# ------------------------------------------------------------------------------------ leaves


def _count(ctx: HTTPContext, result: str) -> None:
    ctx.telemetry.incr_counter("connect.ca.sign", labels={"result": result})


async def sign_csr(ctx: HTTPContext, pem: Any, ident: Identity | None) -> dict[str, Any]:
    """A server signs a CSR for `ident` (None: ACLs off): Consul's ConnectCA.Sign (csr.py). The
    IssuedCert, without any private key: the caller made the key and keeps it."""
    try:
        request = csr.parse(pem)
    except csr.CSRError as err:
        _count(ctx, "invalid")
        raise HTTPError(400, str(err)) from None
    resource, name = csr.needs(request)
    if ident is not None and not ident.authz.allowed(resource, name, "write"):
        _count(ctx, "denied")
        raise deny(ident, resource, "write", name)
    tables = ctx.store.connect
    try:
        uri = csr.place(request, authority.trust_domain(tables), ctx.config.datacenter)
    except csr.WrongPlace as err:
        _count(ctx, "invalid")
        raise HTTPError(400, str(err)) from None
    agent = connect_agent(ctx)
    conf = tables.ca_config
    per_second = ca.parse_config(conf["Config"]).csr_max_per_second if conf else 0.0
    if not agent.signing.take(per_second, agent.loop_time()):
        _count(ctx, "rate_limited")
        raise HTTPError(429, "Rate limit reached, try again later")
    serial, index = await _serial(ctx)
    found = authority.signer(tables)
    if found is None or tables.ca_config is None:
        raise HTTPError(500, "CA is uninitialized and unable to sign certificates yet: no root certificate")
    root, key = found
    issued = csr.sign(key, root["RootCert"], request, uri, serial, agent.clock(),
                      ca.parse_config(tables.ca_config["Config"]).leaf_ttl_s)
    _count(ctx, "signed")
    return leaf.issued_body(issued, leaf.chain_of(issued.cert_pem, root.get("IntermediateCerts")),
                            "Service" if resource == "service" else "Agent", name, uri, index)


async def sign(req: Request, ctx: HTTPContext) -> Answer:
    """PUT/POST /v1/internal/connect/ca/sign {"CSR": "<PEM>"}: a server signs it (a client agent
    has a server answer, as Consul's client agents forward ConnectCA.Sign)."""
    if on_client(ctx):
        return await on_server(req, ctx)
    raw = read_json(req)
    try:
        body = decode(raw, CA_SIGN_REQUEST) if raw is not None else {}
    except DecodeError as err:
        raise HTTPError(400, f"Request decode failed: {err}") from None
    await ensure_ca(ctx)
    issued = await sign_csr(ctx, body.get("CSR") or "", await request_identity(req, ctx))
    return json_answer(req, issued, headers={"X-Consul-Index": str(issued["ModifyIndex"])})


def _manual_roots(ctx: HTTPContext) -> list[str]:
    """The PEM files internal_rpc's ca_file / ca_path name (Consul's ManualCARoots)."""
    s = ctx.config.tls.internal_rpc
    paths = [s.ca_file] if s.ca_file else sorted(str(p) for p in Path(s.ca_path).iterdir() if p.is_file()) \
        if s.ca_path else []
    out = []
    for path in paths:
        try:
            out.append(Path(path).read_text())
        except (OSError, UnicodeDecodeError) as err:
            ctx.log.warning("auto_encrypt: cannot read CA file %s: %s", path, err)
    return out


async def auto_encrypt_sign(ctx: HTTPContext, pem: str, token: str, datacenter: str) -> dict[str, Any]:
    """Consul's AutoEncrypt.Sign on a server (appliance/rpc/autoencrypt.py): allowed by
    auto_encrypt.allow_tls, for this datacenter only, then ConnectCA.Sign with the request's token
    (an agent ID needs node:write); the answer adds the Connect roots, this server's CA and its
    verify_server_hostname. AutoEncryptError carries Consul's text."""
    cfg = ctx.config
    if not cfg.tls.auto_encrypt_allow_tls:
        raise AutoEncryptError(ALLOW_TLS_OFF)
    if datacenter != cfg.datacenter:
        raise AutoEncryptError(f"mismatched datacenter (client_dc='{datacenter}' server_dc='{cfg.datacenter}'); "
                               "check client has same datacenter set as servers")
    try:
        await ensure_ca(ctx)
        ident = await acl_agent(ctx).resolve(token) if cfg.acl.enabled else None
        issued = await sign_csr(ctx, pem, ident)
    except HTTPError as err:
        raise AutoEncryptError(err.text) from None
    return {"IssuedCert": issued, "ConnectCARoots": authority.roots_body(ctx.store.connect),
            "ManualCARoots": _manual_roots(ctx),
            "VerifyServerHostname": cfg.tls.internal_rpc.verify_server_hostname}


async def _issue(ctx: HTTPContext, agent: ConnectAgent, service: str, token: str,
                 ident: Identity | None) -> leaf.Entry:
    """This agent makes the key pair and a CSR for the service; a server signs the CSR (this
    one, or a server a client agent asks with the request's token)."""
    tables = ctx.store.connect
    active = tables.active_root()
    if active is None:
        raise HTTPError(500, "no CA roots")
    key = ca.generate_key(active.get("PrivateKeyType") or "ec", int(active.get("PrivateKeyBits") or 256))
    uri = spiffe.service_uri(authority.trust_domain(tables), ctx.config.datacenter, service)
    pem = csr.make(uri, key)
    if on_client(ctx):
        issued = await _ask_server(ctx, "PUT", SIGN_PATH, token, {"CSR": pem})
    else:
        issued = await sign_csr(ctx, pem, ident)
    try:
        signed, intermediates = leaf.leaf_of({**issued, "PrivateKeyPEM": ca.key_pem(key)})
    except (ValueError, KeyError, TypeError) as err:
        raise HTTPError(500, f"invalid leaf from server: {err}") from None
    return agent.cache.put(service, issued["ServiceURI"], signed, intermediates, int(issued["ModifyIndex"]),
                           agent.clock(), agent.rng.random())


async def current_leaf(ctx: HTTPContext, service: str, revalidate: bool, token: str = "",
                       ident: Identity | None = None) -> tuple[leaf.Entry, bool]:
    """The cached leaf for a service, renewed if due; (entry, whether the cache answered)."""
    agent = connect_agent(ctx)
    lock = agent.issuing.setdefault(service, asyncio.Lock())
    if len(agent.issuing) > leaf.MAX_ENTRIES:  # the locks of services nobody is issuing for go
        for name in [n for n, held in agent.issuing.items() if not held.locked() and n != service]:
            del agent.issuing[name]
    async with lock:
        entry = agent.cache.get(service)
        active = ctx.store.connect.active_root()
        signing = active["SigningKeyID"] if active else ""
        now = agent.clock()
        if entry is not None and entry.leaf.authority_key_id != signing:
            if revalidate:
                entry = None
            else:
                agent.cache.root_changed(entry, signing, now, agent.rng.random())
        if entry is not None and not agent.cache.stale(entry, now):
            return entry, True
        try:
            return await _issue(ctx, agent, service, token, ident), False
        except HTTPError as err:
            if err.status == 429 and entry is not None and now < entry.leaf.valid_before:
                return entry, True  # over the signing limit: the old leaf is still good
            raise


async def agent_leaf(req: Request, ctx: HTTPContext) -> Answer:
    service = path_tail(req, LEAF_PREFIX)
    if not service:
        raise HTTPError(400, "Missing service name")
    opts = query_options(req)
    await ensure_ca(ctx)
    agent = connect_agent(ctx)
    token = acl_agent(ctx).secret(req)[0] if ctx.config.acl.enabled else ""
    ident = await request_identity(req, ctx)
    entry, hit = await current_leaf(ctx, service, revalidate=opts.index == 0, token=token, ident=ident)
    if opts.index > 0 and entry.index == opts.index:
        cfg = ctx.config
        wait = min(opts.wait_s if opts.wait_s > 0 else cfg.default_query_time_s, cfg.max_query_time_s)
        deadline = ctx.loop_time() + wait + ctx.rng.uniform(0, wait / 16)
        while entry.index == opts.index and not ctx.stopping:
            remaining = deadline - ctx.loop_time()
            if remaining <= 0:
                break
            until_renewal = max(0.0, entry.renew_at - agent.clock())
            await park(ctx, (watchkeys.CONNECT_CA,), (), min(remaining, until_renewal + 0.001))
            entry, hit = await current_leaf(ctx, service, revalidate=False, token=token, ident=ident)
    age = int(max(0.0, agent.clock() - entry.leaf.valid_after - ca.CLOCK_SKEW_S)) if hit else 0
    headers = {"X-Consul-Index": str(entry.index), "X-Cache": "HIT" if hit else "MISS", "Age": str(age)}
    return json_answer(req, leaf.body(entry), headers=headers)
