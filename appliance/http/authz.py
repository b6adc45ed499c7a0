"""ACL enforcement for the route table: who a request is, and whether its route lets it through.

How it works
------------
With `acl.enabled`, `Router.dispatch` calls `admitted(route, req, ctx)` before the handler (and
`admit` when that cannot settle it without awaiting) and `finish(route, req, ctx, answer)` after
it; nothing else in the HTTP layer checks permissions. A read that those would let through
untouched (a route that checks nothing, or a cached token that reads all a filtered answer holds)
is recognised first by `passes`, in one lookup of what the same token and route came to last
time, kept until the ACL tables change or the token expires (BENCHMARKS.md, "ACLs on": 0.86x of
the ACL-off agent's requests/s without it, 0.92x with it).

The request's secret is the first of `X-Consul-Token`, `Authorization: Bearer`, `?token=`
(Request.token), the agent's `default` token, `anonymous`. It resolves through the store's ACL
tables (appliance/acl/resolve.py: cached per secret until the tables change or the token expires);
the agent's `agent_recovery` secret resolves locally (agent write on this node, node read), even
without servers. An unknown or expired secret is `403 ACL not found`. A client agent's replica
holds no token secrets: it asks a server which token a secret names and keeps the answer for
`acl.token_ttl`, and while no server answers `acl.down_policy` decides (appliance/acl/remote.py,
`ServerTokens`).

The route's `acl` column says what is needed (appliance/http/routes.py). `<resource>:<level>`:
the segment and any further permission come from appliance/http/authz_routes.py (the key of a KV
route, the service a registration names, the node a session is bound to ...); a missing one is
Consul's 403 naming the accessor and the permission. `filter:<resources>`: the handler answers
in full and `finish` drops what the token may not read (authz_routes.FILTERS knows each answer's
shape), setting `X-Consul-Results-Filtered-By-ACLs: true` when something went and the request
named a token. A blocking query is re-checked when it wakes: a token deleted or expired while it
waited gets its 403, not the answer. `none`: anyone.

The secret of a request other than GET and HEAD also goes with the writes the handler makes
(appliance/acl/caller.py; a read makes none, and setting it costs a read a few percent): a client
agent forwards them with it, and the server authorizes them again with the same
authorizer (appliance/acl/commands.py); a refusal there is a 403 with Consul's text.

The agent's own tokens (`acl.tokens.*`, and those set by `PUT /v1/agent/token/<type>`, kept in
`<data_dir>/acl-tokens.json` with `enable_token_persistence`) live in `AgentTokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from appliance.acl.authorizer import Authorizer
from appliance.acl.builtin import ANONYMOUS_SECRET, GLOBAL_MANAGEMENT_ID, denied_text
from appliance.acl.caller import set_caller
from appliance.acl.policy import Rules
from appliance.acl.remote import RemoteTokens, ServerTokens, Unreachable
from appliance.acl.resolve import ACLNotFound, Identity, NotInReplica, Resolver, expiry
from appliance.federation.forward import Exchange, ForwardError
from appliance.http.authz_routes import FILTERS, NOT_FOUND, SEGMENTS, requirements, txn_op_needs
from appliance.http.errors import HTTPError
from appliance.http.values import Answer, json_answer

if TYPE_CHECKING:
    from appliance.http.context import HTTPContext
    from appliance.http.values import Request

log = logging.getLogger("agent.acl")
IDENTITY = "acl.identity"  # the request's scratch key
FILTERED = "X-Consul-Results-Filtered-By-ACLs"
TOKENS_FILE = "acl-tokens.json"
TXN_ROUTE = ("PUT", "/v1/txn")
TOKEN_TYPES = {"default": "default", "acl_token": "default", "agent": "agent", "acl_agent_token": "agent",
               "agent_recovery": "agent_recovery", "agent_master": "agent_recovery",
               "acl_agent_master_token": "agent_recovery", "replication": "replication",
               "acl_replication_token": "replication", "dns": "dns",
               "config_file_service_registration": "config_file_service_registration"}


class AgentTokens:
    """The agent's tokens: config values, overridden by those set over the API (persisted if asked)."""

    def __init__(self, configured: dict[str, str], data_dir: str, persist: bool) -> None:
        self.values = dict(configured)
        self.path = os.path.join(data_dir, TOKENS_FILE) if data_dir and persist else ""
        if self.path and os.path.exists(self.path):
            try:
                with open(self.path, encoding="utf-8") as f:
                    saved = json.load(f)
                self.values.update({k: v for k, v in saved.items() if isinstance(v, str) and v})
            except (OSError, ValueError) as err:
                log.warning("failed to load persisted ACL tokens: path=%s error=%s", self.path, err)

    def get(self, kind: str) -> str:
        return self.values.get(kind, "")

    def set(self, kind: str, secret: str) -> None:
        if secret:
            self.values[kind] = secret
        else:
            self.values.pop(kind, None)
        if self.path:
            saved = {k: v for k, v in self.values.items() if k != "initial_management"}
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(saved, f)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)


class AclAgent:
    """One agent's ACL state: the resolver and its cache, the agent's tokens, start-up of the tables."""

    def __init__(self, ctx: HTTPContext) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.default_allow = cfg.acl.default_policy == "allow"
        self.resolver = Resolver(cfg.datacenter, self.default_allow)
        self.tokens = AgentTokens(cfg.acl.tokens, cfg.data_dir, cfg.acl.enable_token_persistence)
        self.initialized = False
        self.replication: Any = None  # a secondary datacenter's server: its AclReplicator
        # a client agent: a server resolves, kept for token_ttl, down_policy while none answers
        self.server_tokens: ServerTokens | None = None
        self._asking: set[str] = set()  # DNS tokens being resolved by a server
        self._default_of: tuple[Identity, Identity] | None = None  # (resolved, as the default token)
        # `passes`: (secret, named, id(route)) -> (the ACL tables' index, the token's expiry)
        self.passes: dict[tuple[str, bool, int], tuple[int, float]] = {}
        self.dns_changed: Callable[[], None] | None = None
        if ctx.raft is None:
            elsewhere = cfg.datacenter != cfg.primary_datacenter and not cfg.acl.enable_token_replication
            self.server_tokens = ServerTokens(self.resolver, self._ask_server, cfg.acl.token_ttl_s,
                                              cfg.acl.down_policy, self._connected, elsewhere)
        # a secondary datacenter's server without token replication: the primary resolves (appliance/acl/remote.py)
        self.remote: RemoteTokens | None = None
        if ctx.raft is not None and cfg.datacenter != cfg.primary_datacenter and not cfg.acl.enable_token_replication:
            self.remote = RemoteTokens(self.resolver, self._ask_primary, cfg.acl.token_ttl_s, cfg.acl.down_policy)
        node = cfg.node_name
        recovery = Rules(exact={"agent": {node: "write"}}, prefix={"node": {"": "read"}})
        self.recovery = Identity("agent-recovery", None, Authorizer(recovery, False))

    async def ensure_tables(self) -> None:
        """The built-in policies, the anonymous token and the initial management token, proposed by
        the first request a leader serves before its ACL leader duties ran (never waits for one)."""
        if self.initialized:
            return
        cfg = self.ctx.config  # the initial management token: the primary datacenter's only
        initial = self.tokens.get("initial_management") if cfg.datacenter == cfg.primary_datacenter else ""
        acl = self.ctx.store.acl
        if acl.policies and (not initial or acl.token_by_secret(initial) is not None):
            self.initialized = True
            return
        raft = self.ctx.raft
        if raft is None or not raft.is_leader:  # the leader's duties make them (appliance/acl_leader.py)
            return
        cmd: dict[str, Any] = {"Type": "acl", "Op": "init"}
        if initial:
            cmd["Object"] = {"AccessorID": str(uuid.uuid4()), "SecretID": initial,
                             "Description": "Initial Management Token", "Local": False,
                             "Policies": [{"ID": GLOBAL_MANAGEMENT_ID}], "CreateTime": now_rfc3339()}
        try:
            await self.ctx.consensus.propose(cmd)
            self.initialized = True
        except Exception as err:  # noqa: BLE001 - no leader yet: the next request tries again
            log.debug("ACL tables not initialised yet: %s", err)

    def secret(self, req: Request) -> tuple[str, bool]:
        """The secret a request acts with, and whether it named one."""
        return self.secret_of(req.token)

    def secret_of(self, token: str) -> tuple[str, bool]:
        """The secret a request naming `token` (or none: "") acts with, and whether it named one."""
        if token:
            return token, True
        return self.tokens.get("default") or ANONYMOUS_SECRET, False

    def resolve_secret(self, secret: str) -> Identity:
        recovery = self.tokens.get("agent_recovery")
        if recovery and secret == recovery:
            return self.recovery
        store = self.ctx.store
        now = time.time()
        try:
            if self.server_tokens is not None:  # a client agent: as a server last resolved it
                return self.server_tokens.known(secret, store.acl, store.watch_index.get("acl", 0), now)
            return self.resolver.resolve(store.acl, store.watch_index.get("acl", 0), secret, now)
        except ACLNotFound as err:
            remote = self.remote.cached(secret, store.acl, now) if self.remote is not None else None
            if remote is not None:  # resolved by the primary a moment ago
                return remote
            raise HTTPError(403, str(err)) from None

    def _connected(self) -> bool:
        return bool(getattr(self.ctx.consensus, "connected", False))  # the replica streams from a server

    async def _ask_primary(self, secret: str) -> dict[str, Any] | None:
        """The token `secret` names, as the primary datacenter resolves it (None: it does not)."""
        return await self._token_self(secret, self.ctx.config.primary_datacenter)

    async def _ask_server(self, secret: str) -> dict[str, Any] | None:
        """A client agent: the token `secret` names, as a server of its datacenter resolves it."""
        return await self._token_self(secret, None)

    async def _token_self(self, secret: str, dc: str | None) -> dict[str, Any] | None:
        """`GET /v1/acl/token/self` with `secret`, in datacenter `dc` (None: a server of this one)."""
        exchange = Exchange("GET", "/v1/acl/token/self", [], [("X-Consul-Token", secret)])
        federation = self.ctx.federation
        try:
            if dc is None:
                answer = await federation.ask_server(exchange)
            else:
                answer = await federation.request(dc, exchange)
        except ForwardError as err:
            raise Unreachable(str(err)) from None
        if answer.status == 200:
            token: dict[str, Any] = json.loads(answer.body)
            return token
        if answer.status == 403 and answer.body.strip() == b"ACL not found":
            return None
        raise Unreachable(answer.body.decode("utf-8", "replace"))

    async def resolve(self, secret: str) -> Identity:
        """`resolve_secret`, and for a secret this agent does not know: a client agent catches up
        with the leader first; a secondary without token replication asks the primary. A client
        agent asks a server (`ServerTokens`)."""
        if self.server_tokens is not None:
            return await self._from_server(secret)
        try:
            return self.resolve_secret(secret)
        except HTTPError as err:
            if err.text != "ACL not found":
                raise
            if await self._caught_up(err):
                try:
                    return self.resolve_secret(secret)
                except HTTPError as again:
                    if again.text != "ACL not found":
                        raise
            if self.remote is None:
                raise
        try:
            return await self.remote.identity(secret, self.ctx.store.acl, time.time())
        except ACLNotFound as err:
            raise HTTPError(403, str(err)) from None

    async def _from_server(self, secret: str) -> Identity:
        recovery = self.tokens.get("agent_recovery")
        if recovery and secret == recovery:
            return self.recovery
        assert self.server_tokens is not None
        store, tokens = self.ctx.store, self.server_tokens
        try:
            return await tokens.identity(secret, store.acl, store.watch_index.get("acl", 0), time.time())
        except NotInReplica as err:  # made a moment ago: the replica catches up first
            if not await self._caught_up(HTTPError(403, str(err))):
                raise HTTPError(403, str(err)) from None
        except ACLNotFound as err:
            raise HTTPError(403, str(err)) from None
        try:
            return await tokens.identity(secret, store.acl, store.watch_index.get("acl", 0), time.time())
        except ACLNotFound as err:
            raise HTTPError(403, str(err)) from None

    def dns_authorizer(self, secret: str, now: float) -> Authorizer:
        """A client agent's DNS token as a server last resolved it (DNS answers without waiting):
        one never resolved, or resolved more than token_ttl ago, is asked for in the background
        and `dns_changed` (the DNS server drops its cached answers) called once it is known;
        until then the last answer stands, or nothing is visible."""
        assert self.server_tokens is not None
        store = self.ctx.store
        tokens = self.server_tokens
        if not tokens.fresh(secret, now) and secret not in self._asking:
            self._asking.add(secret)
            task = asyncio.get_running_loop().create_task(self._ask_for_dns(secret))
            task.add_done_callback(lambda _: self._asking.discard(secret))
        try:
            if secret == self.tokens.get("agent_recovery"):
                return self.recovery.authz
            return tokens.known(secret, store.acl, store.watch_index.get("acl", 0), now).authz
        except ACLNotFound:
            return tokens.down.deny_all.authz

    async def _ask_for_dns(self, secret: str) -> None:
        with contextlib.suppress(HTTPError):
            await self._from_server(secret)
        if self.dns_changed is not None:
            self.dns_changed()

    def known_identity(self, secret: str, named: bool) -> Identity | None:
        """The identity of `secret` if the resolver has it cached and current (a server's common
        case), without awaiting; None: ask `identity`, which may resolve, ask or wait."""
        if self.server_tokens is not None or not self.initialized:
            return None
        store = self.ctx.store
        ident = self.resolver.cached(secret, store.watch_index.get("acl", 0), time.time())
        if ident is None or named:
            return ident
        return self._defaulted(ident)

    def _defaulted(self, ident: Identity) -> Identity:
        """`ident` acting for a request that named no token (one Identity per resolved one)."""
        last = self._default_of
        if last is None or last[0] is not ident:
            last = self._default_of = (ident, Identity(ident.accessor, ident.token, ident.authz,
                                                       anonymous_default=True))
        return last[1]

    async def identity(self, req: Request) -> Identity:
        found: Identity | None = req.get(IDENTITY)
        if found is not None:
            return found
        if not self.initialized:
            await self.ensure_tables()
        secret, named = self.secret(req)
        ident = await self.resolve(secret)
        if not named:
            ident = self._defaulted(ident)
        req[IDENTITY] = ident
        return ident

    async def _caught_up(self, err: HTTPError) -> bool:
        """A client agent that does not know a secret first catches up with the leader's commit
        index (a token made a moment ago through a server), as Consul's clients ask a server;
        False when that is not the case or cannot be done (the 403 stands)."""
        consensus = self.ctx.consensus
        if self.server_tokens is None or err.text != "ACL not found" or not getattr(consensus, "connected", False):
            return False
        try:
            await consensus.read_point("default")
        except Exception:  # noqa: BLE001 - no leader now: the token stays unknown
            return False
        return True


def now_rfc3339(at: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def acl_agent(ctx: HTTPContext) -> AclAgent:
    """The context's ACL state, made on first use."""
    agent: AclAgent | None = ctx.acl
    if agent is None:
        agent = ctx.acl = AclAgent(ctx)
    return agent


def deny(ident: Identity, resource: str, level: str, segment: str | None) -> HTTPError:
    return HTTPError(403, denied_text(ident.accessor, f"{resource}:{level}", segment))


async def request_identity(req: Request, ctx: HTTPContext) -> Identity | None:
    """The request's identity, or None when ACLs are off (handlers that check on their own)."""
    if not ctx.config.acl.enabled:
        return None
    return await acl_agent(ctx).identity(req)


def _allowed(ident: Identity, resource: str, level: str, segment: str | None) -> bool:
    if resource == "key_prefix":
        return ident.authz.key_write_prefix(segment or "")
    return ident.authz.allowed(resource, segment or "", level)


class _Plan:
    """What a route's `acl` column asks of `admit` and `finish`, worked out once per route."""

    __slots__ = ("admit", "keep", "filtered", "whole")

    def __init__(self, route: Any) -> None:
        segmented = (route.method, route.path) in SEGMENTS
        filtered = tuple(route.acl.removeprefix("filter:").split(",")) if route.acl.startswith("filter:") else ()
        # admit: "none" (anyone), "identity" (resolve only: finish filters), "txn", "require"
        if route.acl == "none":
            self.admit = "none"
        elif filtered and not segmented:
            self.admit = "identity"
        elif (route.method, route.path) == TXN_ROUTE:
            self.admit = "txn"
        else:
            self.admit = "require"
        self.keep = FILTERS.get(route.path)
        self.filtered = filtered
        self.whole = self.keep is None and bool(filtered) and not segmented  # all or nothing


_READS = frozenset(("GET", "HEAD"))
_PLANS: dict[int, _Plan] = {}  # by id(route): the routes are the route table's, alive for good


def _plan(route: Any) -> _Plan:
    plan = _PLANS.get(id(route))
    if plan is None:
        plan = _PLANS[id(route)] = _Plan(route)
    return plan


_PASSES_LIMIT = 4096  # (token, route) pairs remembered by `passes`; cleared when full


def passes(route: Any, req: Request, ctx: HTTPContext) -> bool:
    """The common read settled in one lookup: True when a GET or HEAD may go straight to the
    handler and its answer needs nothing from `finish`: its route checks nothing, or its token's
    identity was cached and current when the same route last let it through with nothing to
    filter (the token reads every resource the answer holds), and the ACL tables have not changed
    and the token not expired since. Anything else (a write, a token not yet cached, a blocking
    read that may have waited and is checked again) goes through `admitted`, `admit`, `finish`."""
    if req.method not in _READS or (route.blocking and "index" in req.query):
        return False
    return read_passes(route, req.token, ctx)


def read_passes(route: Any, token: str, ctx: HTTPContext) -> bool:
    """`passes` for a GET or HEAD that is not a blocking query's wait, naming `token` ("" for
    none; appliance/http/replay.py reads it from the request without a request value)."""
    plan = _plan(route)
    if plan.admit != "identity":
        return plan.admit == "none"
    agent = acl_agent(ctx)
    secret, named = agent.secret_of(token)
    key = (secret, named, id(route))
    index = ctx.store.watch_index.get("acl", 0)
    seen = agent.passes.get(key)
    if seen is None or seen[0] != index:
        seen = _learn_pass(agent, plan, secret, named, index)
        if seen is None:
            return False
        if len(agent.passes) >= _PASSES_LIMIT:
            agent.passes.clear()
        agent.passes[key] = seen
    return seen[1] > time.time()


def _learn_pass(agent: AclAgent, plan: _Plan, secret: str, named: bool, index: int) -> tuple[int, float] | None:
    """What `passes` remembers for a token on a filtered route: until when it passes (0: never,
    `finish` would filter or deny); None for a token the resolver does not hold yet, remembered
    as nothing (so the memo holds no made-up secrets)."""
    ident = agent.known_identity(secret, named)
    if ident is None:
        return None
    if not ident.authz.reads_all(plan.filtered):
        return index, 0.0
    expires = expiry(ident.token) if ident.token is not None else None
    return index, math.inf if expires is None else expires


def admitted(route: Any, req: Request, ctx: HTTPContext) -> bool:
    """Before the handler, the common case without awaiting: True when the route lets the request
    through on what is known now (its token's identity cached, stored on the request); False
    leaves the rest to `admit` (a token to resolve, a transaction, a refusal)."""
    agent = acl_agent(ctx)
    secret, named = agent.secret(req)
    if req.method not in _READS:  # what a write forwarded to a server acts with (acl/caller.py); a
        set_caller(secret)  # read forwards none, and its task starts with no caller (anonymous)
    plan = _plan(route)
    if plan.admit == "none":
        return True
    ident = agent.known_identity(secret, named)  # the resolver's cache
    if ident is None or plan.admit == "txn":
        return False
    req[IDENTITY] = ident
    return plan.admit == "identity" or all(_allowed(ident, *need) for need in requirements(route, req, ctx))


async def admit(route: Any, req: Request, ctx: HTTPContext) -> Answer | None:
    """What `admitted` did not settle: resolve the token (it may ask a server) and check the
    route; a refused request raises 403, except a transaction: each operation the token may not
    do is an error of a 409 answer (returned), as Consul reports them."""
    ident: Identity = req.get(IDENTITY) or await acl_agent(ctx).identity(req)
    plan = _plan(route)
    if plan.admit in ("none", "identity"):
        return None
    if plan.admit == "txn":
        errors = [{"OpIndex": i, "What": "Permission denied"}
                  for i, (resource, level, segment) in txn_op_needs(req)
                  if not _allowed(ident, resource, level, segment)]
        return json_answer(req, {"Results": None, "Errors": errors}, status=409) if errors else None
    for resource, level, segment in requirements(route, req, ctx):
        if not _allowed(ident, resource, level, segment):
            raise deny(ident, "key" if resource == "key_prefix" else resource,
                       "write" if resource == "key_prefix" else level, segment)
    return None


def finish(route: Any, req: Request, ctx: HTTPContext, answer: Answer) -> Answer:
    """After the handler: re-check a blocking query's token, filter a `filter:` route's answer."""
    ident: Identity | None = req.get(IDENTITY)
    if ident is None:
        return answer
    authz = ident.authz
    if route.blocking and ident.token is not None and "index" in req.query:  # it may have waited:
        authz = acl_agent(ctx).resolve_secret(ident.token["SecretID"]).authz  # 403 if the token went
    plan = _plan(route)
    if plan.whole:  # an answer whose shape is not known here: all or nothing
        for resource in plan.filtered:
            if not authz.all_allowed(resource, "read"):
                raise deny(ident, resource, "read", None)
        return answer
    keep = plan.keep
    if keep is None or answer.status != 200:
        return answer
    if plan.filtered and authz.reads_all(plan.filtered):
        return answer  # a token that reads everything these answers hold: nothing to drop
    if not answer.has_json:  # rendered by the handler (sd/http.py): filter the JSON it holds
        if answer.content_type != "application/json" or not answer.body:
            return answer
        answer.json = json.loads(answer.body)
        answer.body = None
    value, removed = keep(answer.json, authz, req, ctx)
    if value is NOT_FOUND:  # a listing with nothing readable left looks like an empty prefix
        return Answer(404, answer.headers, b"")
    if value is not answer.json:
        answer.json = value
        answer.entry = None  # not the cached rendering any more
    if removed and not ident.anonymous_default:
        answer.headers[FILTERED] = "true"
    return answer
