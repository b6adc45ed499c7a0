"""The route table: every HTTP endpoint of the agent, declared once.

Each `Route` names its method and path (an exact path, or a prefix ending in "/" whose rest is the
path parameter: Consul's ServeMux rules, appliance/http/routing.py), its handler (`async def
handler(req, ctx) -> Answer`), whether it is a blocking query (`?index`/`?wait`, or `?hash` on
the agent's service), its `filter=` schema (appliance/filter), the body the adapter reads for it
(bytes, or the name of a `limits` setting), and the ACL permission it needs, from Consul's
per-endpoint table (reference: security.md §3.3): `<resource>:<read|write>` for an endpoint that
refuses (403) without it, `filter:<resource>[,<resource>]` for one that drops what the token may
not read, `none` for one anyone may call. ACL enforcement, the OpenAPI document
(appliance/http/openapi.py) and the route tests all read this table. Extensions (exporters/, sd/)
contribute `Route`s of their own.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.http import paths
from appliance.http.encoding import JSON_BODY_LIMIT, MAX_RESTORE_BYTES
from appliance.http.handlers import (
    acl,
    agent,
    catalog,
    config,
    coordinate,
    event,
    health,
    host,
    keyring,
    kv,
    metrics,
    operator,
    peering,
    query,
    session,
    status,
    txn,
    ui,
    ui_proxy,
)

if TYPE_CHECKING:
    from appliance.http.context import HTTPContext
    from appliance.http.values import Answer, Request

Handler = Callable[["Request", "HTTPContext"], Awaitable["Answer"]]
ACL = re.compile(r"none|(acl|agent|event|intention|key|keyring|mesh|node|operator|query|service|session):(read|write)"
                 r"|filter:[a-z]+(,[a-z]+)*")


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # exact, or a prefix ending in "/" (the rest is the path parameter)
    handler: Handler
    acl: str  # "<resource>:<read|write>", "filter:<resource>[,...]" or "none" (security.md §3.3)
    blocking: bool = False
    filter: str | None = None  # the filter= schema (appliance/filter)
    body_limit: int | str = 0  # bytes the adapter reads, or the name of a `limits` setting
    summary: str = ""

    @property
    def prefix(self) -> bool:
        return self.path.endswith("/")

    def body_bytes(self, limits: Any) -> int:
        limit = self.body_limit
        return int(getattr(limits, limit)) if isinstance(limit, str) else limit


DEFERRED: list[tuple[str, str]] = []  # (module, handler) of every handler loaded on first use


def on_first_use(module: str, name: str) -> Handler:
    """The handler `name` of appliance/http/handlers/<module>.py, imported at its first request.
    Connect (the CA, intentions, discovery chains), JWT login and Raft snapshots load cryptography
    or the server's Raft code; an agent that never serves them, a client agent most often, never
    loads them (docs/internals/performance.md, "Client footprint")."""
    DEFERRED.append((module, name))
    found: list[Handler] = []

    async def handler(req: Request, ctx: HTTPContext) -> Answer:
        if not found:
            found.append(getattr(importlib.import_module(f"appliance.http.handlers.{module}"), name))
        return await found[0](req, ctx)

    handler.__name__ = handler.__qualname__ = name
    return handler


def _ca(name: str) -> Handler:
    return on_first_use("connect_ca", name)


def _intentions(name: str) -> Handler:
    return on_first_use("intentions", name)


def _auth(name: str) -> Handler:
    return on_first_use("acl_auth", name)


J = JSON_BODY_LIMIT
R = Route

ROUTES: tuple[Route, ...] = (
    # -- agent (appliance/http/handlers/agent.py)
    R("GET", "/v1/agent/self", agent.self_, "agent:read", summary="This agent's configuration and member"),
    R("GET", "/v1/agent/version", agent.version, "none", summary="Version"),
    R("GET", "/v1/agent/members", agent.members, "filter:node", summary="Members of the LAN or WAN pool"),
    R("GET", "/v1/agent/services", agent.services, "filter:service", filter="agent_services",
      summary="This agent's services"),
    R("GET", "/v1/agent/service/", agent.service, "service:read", blocking=True, summary="One local service"),
    R("GET", "/v1/agent/checks", agent.checks, "filter:node,service", filter="agent_checks",
      summary="This agent's checks"),
    R("GET", "/v1/agent/health/service/id/", agent.health_service_id, "service:read",
      summary="Aggregated health of a local service by ID"),
    R("GET", "/v1/agent/health/service/name/", agent.health_service_name, "service:read",
      summary="Aggregated health of local services by name"),
    R("PUT", "/v1/agent/service/register", agent.service_register, "service:write", body_limit=J,
      summary="Register a local service"),
    R("PUT", "/v1/agent/service/deregister/", agent.service_deregister, "service:write",
      summary="Deregister a local service"),
    R("PUT", "/v1/agent/service/maintenance/", agent.service_maintenance, "service:write",
      summary="Service maintenance mode"),
    R("PUT", "/v1/agent/check/register", agent.check_register, "node:write", body_limit=J,
      summary="Register a local check"),
    R("PUT", "/v1/agent/check/deregister/", agent.check_deregister, "node:write", summary="Deregister a check"),
    R("PUT", "/v1/agent/check/pass/", agent.check_pass, "node:write", summary="TTL check: passing"),
    R("PUT", "/v1/agent/check/warn/", agent.check_warn, "node:write", summary="TTL check: warning"),
    R("PUT", "/v1/agent/check/fail/", agent.check_fail, "node:write", summary="TTL check: critical"),
    R("PUT", "/v1/agent/check/update/", agent.check_update, "node:write", body_limit=J,
      summary="TTL check: status and output"),
    R("PUT", "/v1/agent/maintenance", agent.node_maintenance, "node:write", summary="Node maintenance mode"),
    R("PUT", "/v1/agent/reload", agent.reload, "agent:write", summary="Reload the configuration"),
    R("PUT", "/v1/agent/leave", agent.leave, "agent:write", summary="Leave gracefully and shut down"),
    R("PUT", "/v1/agent/join/", agent.join, "agent:write", summary="Join a pool through an address"),
    R("PUT", "/v1/agent/force-leave/", agent.force_leave, "operator:write", summary="Force a member out"),
    R("GET", "/v1/agent/monitor", agent.monitor, "agent:read", summary="Stream the agent's logs"),
    R("GET", "/v1/agent/metrics", metrics.metrics, "agent:read", summary="The agent's metrics"),
    R("GET", "/v1/agent/host", host.agent_host, "operator:read", summary="The host: memory, CPUs, OS, disk"),
    # -- catalog
    R("PUT", "/v1/catalog/register", catalog.register, "node:write", body_limit=J, summary="Register in the catalog"),
    R("PUT", "/v1/catalog/deregister", catalog.deregister, "node:write", body_limit=J,
      summary="Deregister from the catalog"),
    R("GET", "/v1/catalog/datacenters", catalog.datacenters, "none", summary="Known datacenters"),
    R("GET", "/v1/catalog/nodes", catalog.nodes, "filter:node", blocking=True, filter="catalog_nodes",
      summary="Nodes"),
    R("GET", "/v1/catalog/services", catalog.services, "filter:service", blocking=True, filter="catalog_services",
      summary="Services"),
    R("GET", "/v1/catalog/service/", catalog.service, "filter:service,node", blocking=True,
      filter="catalog_service", summary="Instances of a service"),
    R("GET", "/v1/catalog/connect/", catalog.connect, "filter:service,node", blocking=True,
      filter="catalog_service", summary="Connect-capable instances of a service (its proxies, native instances)"),
    R("GET", "/v1/catalog/gateway-services/", catalog.gateway_services, "service:read", blocking=True,
      summary="Services linked to a terminating or ingress gateway"),
    R("GET", "/v1/catalog/node/", catalog.node, "filter:node,service", blocking=True, filter="catalog_node",
      summary="A node and its services"),
    R("GET", "/v1/catalog/node-services/", catalog.node_services, "filter:node,service", blocking=True,
      filter="catalog_node_services", summary="A node's services as a list"),
    # -- health
    R("GET", "/v1/health/node/", health.node, "filter:node,service", blocking=True, filter="health_checks",
      summary="Checks of a node"),
    R("GET", "/v1/health/checks/", health.checks, "filter:node,service", blocking=True, filter="health_checks",
      summary="Checks of a service"),
    R("GET", "/v1/health/state/", health.state, "filter:node,service", blocking=True, filter="health_checks",
      summary="Checks in a state"),
    R("GET", "/v1/health/connect/", health.connect, "filter:node,service", blocking=True,
      filter="health_service", summary="Connect-capable instances of a service with their checks"),
    R("GET", "/v1/health/ingress/", health.ingress, "filter:node,service", blocking=True,
      filter="health_service", summary="Ingress gateways exposing a service, with their checks"),
    R("GET", "/v1/health/service/", health.service, "filter:node,service", blocking=True, filter="health_service",
      summary="Instances of a service with their node and checks"),
    # -- KV
    R("GET", kv.PREFIX, kv.get, "key:read", blocking=True, summary="Read a key, a prefix or its keys"),
    R("PUT", kv.PREFIX, kv.put, "key:write", body_limit="kv_max_value_size", summary="Write a key"),
    R("DELETE", kv.PREFIX, kv.delete, "key:write", summary="Delete a key or a prefix"),
    # -- sessions and transactions
    R("PUT", "/v1/session/create", session.create, "session:write", body_limit=J, summary="Create a session"),
    R("PUT", "/v1/session/destroy/", session.destroy, "session:write", summary="Destroy a session"),
    R("PUT", "/v1/session/renew/", session.renew, "session:write", summary="Renew a TTL session"),
    R("GET", "/v1/session/info/", session.info, "filter:session", blocking=True, summary="One session"),
    R("GET", "/v1/session/node/", session.node, "filter:session", blocking=True, summary="A node's sessions"),
    R("GET", "/v1/session/list", session.session_list, "filter:session", blocking=True, summary="Every session"),
    R("PUT", "/v1/txn", txn.apply, "filter:key", body_limit="txn_max_req_len",
      summary="Apply KV, node, service and check operations, all or none"),
    # -- prepared queries
    R("POST", "/v1/query", query.create, "query:write", body_limit=J, summary="Create a prepared query"),
    R("GET", "/v1/query", query.query_list, "filter:query", blocking=True, summary="Every prepared query"),
    R("GET", query.PREFIX, query.read, "query:read", blocking=True,
      summary="A prepared query; <id or name>/execute runs it, /explain renders it"),
    R("PUT", query.PREFIX, query.update, "query:write", body_limit=J, summary="Replace a prepared query"),
    R("DELETE", query.PREFIX, query.delete, "query:write", summary="Delete a prepared query"),
    # -- events, coordinates, status
    R("PUT", event.FIRE_PREFIX, event.fire, "event:write", body_limit=event.MAX_PAYLOAD_READ,
      summary="Fire a user event"),
    R("GET", "/v1/event/list", event.event_list, "filter:event", blocking=True, summary="Recent user events"),
    R("GET", "/v1/coordinate/datacenters", coordinate.datacenters, "none", summary="WAN coordinates"),
    R("GET", "/v1/coordinate/nodes", coordinate.nodes, "filter:node", blocking=True, summary="LAN coordinates"),
    R("GET", coordinate.NODE_PREFIX, coordinate.node, "filter:node", blocking=True, summary="A node's coordinate"),
    R("PUT", "/v1/coordinate/update", coordinate.update, "node:write", body_limit=coordinate.MAX_UPDATE_BYTES,
      summary="Update a node's coordinate"),
    R("GET", "/v1/status/leader", status.leader, "none", summary="The Raft leader's address"),
    R("GET", "/v1/status/peers", status.peers, "none", summary="The Raft voters' addresses"),
    # -- operator, keyring, snapshot
    R("GET", "/v1/operator/raft/configuration", operator.raft_configuration, "operator:read",
      summary="Raft configuration"),
    R("DELETE", "/v1/operator/raft/peer", operator.raft_remove_peer, "operator:write", summary="Remove a peer"),
    R("POST", "/v1/operator/raft/transfer-leader", operator.raft_transfer_leader, "operator:write",
      summary="Transfer leadership"),
    R("GET", "/v1/operator/autopilot/health", operator.autopilot_health, "operator:read", summary="Autopilot health"),
    R("GET", "/v1/operator/autopilot/state", operator.autopilot_state, "operator:read", summary="Autopilot state"),
    R("GET", "/v1/operator/autopilot/configuration", operator.autopilot_get_configuration, "operator:read",
      summary="Autopilot configuration"),
    R("PUT", "/v1/operator/autopilot/configuration", operator.autopilot_set_configuration, "operator:write",
      body_limit=operator.MAX_AUTOPILOT_BYTES, summary="Set the autopilot configuration"),
    R("GET", "/v1/operator/usage", operator.usage, "operator:read", blocking=True,
      summary="Service, instance and node counts (?global: every datacenter)"),
    # -- Connect: the CA (appliance/http/handlers/connect_ca.py, loaded on first use)
    R("GET", "/v1/connect/ca/roots", _ca("roots"), "none", blocking=True, summary="Connect CA roots (?pem)"),
    R("GET", "/v1/connect/ca/configuration", _ca("configuration"), "operator:write", blocking=True,
      summary="Connect CA configuration"),
    R("PUT", "/v1/connect/ca/configuration", _ca("set_configuration"), "operator:write", body_limit=J,
      summary="Set the Connect CA configuration (a new key or root rotates the CA)"),
    R("GET", "/v1/agent/connect/ca/roots", _ca("agent_roots"), "none", blocking=True,
      summary="Connect CA roots, as this agent caches them"),
    R("GET", paths.LEAF_PREFIX, _ca("agent_leaf"), "service:write", blocking=True,
      summary="A leaf certificate for a service, renewed before it expires"),
    *(R(method, paths.SIGN_PATH, _ca("sign"), "none", body_limit=J,
        summary="A server signs a CSR (service:write or node:write on its SPIFFE ID, checked by the handler)")
      for method in ("PUT", "POST")),
    # -- Connect: config entries (handlers/config.py; the permission depends on the kind, authz_routes.py)
    R("GET", config.PREFIX, config.read, "service:read", blocking=True,
      summary="Config entries of a kind, or one entry (<kind>/<name>)"),
    R("PUT", "/v1/config", config.apply, "service:write", body_limit=J, summary="Write a config entry (?cas)"),
    R("DELETE", config.PREFIX, config.delete, "service:write", summary="Delete a config entry (?cas)"),
    # -- Connect: intentions, stored as service-intentions entries (handlers/intentions.py, loaded on first use)
    R("GET", "/v1/connect/intentions", _intentions("intention_list"), "filter:intention", blocking=True,
      filter="intentions", summary="Every intention, by precedence (?filter)"),
    R("POST", "/v1/connect/intentions", _intentions("create"), "intention:write", body_limit=J,
      summary="Create an intention (legacy, with an ID)"),
    R("GET", "/v1/connect/intentions/exact", _intentions("exact_get"), "intention:read",
      summary="The intention from ?source= to ?destination="),
    R("PUT", "/v1/connect/intentions/exact", _intentions("exact_put"), "intention:write", body_limit=J,
      summary="Create or update the intention from ?source= to ?destination="),
    R("DELETE", "/v1/connect/intentions/exact", _intentions("exact_delete"), "intention:write",
      summary="Delete the intention from ?source= to ?destination="),
    R("GET", "/v1/connect/intentions/match", _intentions("intention_match"), "filter:intention", blocking=True,
      summary="Intentions matching ?by=source|destination ?name=, in evaluation order"),
    R("GET", "/v1/connect/intentions/check", _intentions("check"), "intention:read",
      summary="Whether ?source= may connect to ?destination="),
    R("GET", paths.INTENTION_PREFIX, _intentions("id_get"), "intention:read", summary="An intention by ID"),
    R("PUT", paths.INTENTION_PREFIX, _intentions("id_put"), "intention:write", body_limit=J,
      summary="Update an intention by ID"),
    R("DELETE", paths.INTENTION_PREFIX, _intentions("id_delete"), "intention:write",
      summary="Delete an intention by ID"),
    *(R(method, "/v1/agent/connect/authorize", _intentions("authorize"), "service:write", body_limit=J,
        summary="Whether a client certificate may connect to a service (its intentions)")
      for method in ("POST", "PUT")),
    # -- Connect: the discovery chain (handlers/discovery_chain.py, loaded on first use)
    R("GET", paths.DISCOVERY_CHAIN_PREFIX, on_first_use("discovery_chain", "read"), "service:read", blocking=True,
      summary="A service's compiled discovery chain (?compile-dc)"),
    R("POST", paths.DISCOVERY_CHAIN_PREFIX, on_first_use("discovery_chain", "read"), "service:read", body_limit=J,
      summary="A service's compiled discovery chain with overrides in the body"),
    # -- peering, as a Consul with no peers (peering falls back to operator permissions)
    R("GET", "/v1/peerings", peering.peerings, "operator:read", summary="Peerings (none)"),
    R("GET", peering.PREFIX, peering.read, "operator:read", summary="A peering (none exists)"),
    R("DELETE", peering.PREFIX, peering.delete, "operator:write", summary="Delete a peering"),
    *(R(method, "/v1/operator/keyring", keyring.keyring, "keyring:read" if method == "GET" else "keyring:write",
        body_limit=0 if method == "GET" else J, summary=f"Keyring: {op}")
      for method, op in keyring.OPS.items()),
    # -- ACL (appliance/http/handlers/acl.py; acl_auth.py loaded on first use)
    R("PUT", "/v1/acl/bootstrap", acl.bootstrap, "none", body_limit=J, summary="Bootstrap the ACL system"),
    R("GET", "/v1/acl/replication", acl.replication, "none", summary="ACL replication status"),
    R("PUT", "/v1/acl/token", acl.token_create, "acl:write", body_limit=J, summary="Create a token"),
    R("GET", "/v1/acl/token/self", acl.token_self, "none", summary="The request's own token"),
    R("GET", acl.TOKEN, acl.token_read, "acl:read", summary="A token (?expanded)"),
    R("PUT", acl.TOKEN, acl.token_update, "acl:write", body_limit=J, summary="Update a token; <id>/clone clones it"),
    R("DELETE", acl.TOKEN, acl.token_delete, "acl:write", summary="Delete a token"),
    R("GET", "/v1/acl/tokens", acl.token_list, "acl:read", summary="Tokens (?policy ?role ?authmethod ?servicename)"),
    R("PUT", "/v1/acl/policy", acl.policy_create, "acl:write", body_limit=J, summary="Create a policy"),
    R("GET", acl.POLICY, acl.policy_read, "acl:read", summary="A policy"),
    R("GET", acl.POLICY_NAME, acl.policy_read, "acl:read", summary="A policy by name"),
    R("PUT", acl.POLICY, acl.policy_update, "acl:write", body_limit=J, summary="Update a policy"),
    R("DELETE", acl.POLICY, acl.policy_delete, "acl:write", summary="Delete a policy"),
    R("GET", "/v1/acl/policies", acl.policy_list, "acl:read", summary="Policies"),
    R("PUT", "/v1/acl/role", acl.role_create, "acl:write", body_limit=J, summary="Create a role"),
    R("GET", acl.ROLE, acl.role_read, "acl:read", summary="A role"),
    R("GET", acl.ROLE_NAME, acl.role_read, "acl:read", summary="A role by name"),
    R("PUT", acl.ROLE, acl.role_update, "acl:write", body_limit=J, summary="Update a role"),
    R("DELETE", acl.ROLE, acl.role_delete, "acl:write", summary="Delete a role"),
    R("GET", "/v1/acl/roles", acl.role_list, "acl:read", summary="Roles (?policy)"),
    R("GET", "/v1/acl/templated-policies", acl.templated_list, "acl:read", summary="Templated policies"),
    R("GET", acl.TEMPLATE_NAME, acl.templated_read, "acl:read", summary="A templated policy"),
    R("POST", acl.TEMPLATE_PREVIEW, acl.templated_preview, "acl:read", body_limit=J,
      summary="A templated policy rendered with its variables"),
    R("PUT", "/v1/acl/auth-method", _auth("method_create"), "acl:write", body_limit=J, summary="Create an auth method"),
    R("GET", paths.AUTH_METHOD_PREFIX, _auth("method_read"), "acl:read", summary="An auth method"),
    R("PUT", paths.AUTH_METHOD_PREFIX, _auth("method_update"), "acl:write", body_limit=J,
      summary="Update an auth method"),
    R("DELETE", paths.AUTH_METHOD_PREFIX, _auth("method_delete"), "acl:write", summary="Delete an auth method"),
    R("GET", "/v1/acl/auth-methods", _auth("method_list"), "acl:read", summary="Auth methods"),
    R("PUT", "/v1/acl/binding-rule", _auth("rule_create"), "acl:write", body_limit=J, summary="Create a binding rule"),
    R("GET", paths.BINDING_RULE_PREFIX, _auth("rule_read"), "acl:read", summary="A binding rule"),
    R("PUT", paths.BINDING_RULE_PREFIX, _auth("rule_update"), "acl:write", body_limit=J,
      summary="Update a binding rule"),
    R("DELETE", paths.BINDING_RULE_PREFIX, _auth("rule_delete"), "acl:write", summary="Delete a binding rule"),
    R("GET", "/v1/acl/binding-rules", _auth("rule_list"), "acl:read", summary="Binding rules (?authmethod)"),
    R("POST", "/v1/acl/login", _auth("login"), "none", body_limit=J, summary="Exchange a bearer token for a token"),
    R("POST", "/v1/acl/logout", _auth("logout"), "none", summary="Delete a token made by login"),
    R("PUT", acl.AGENT_TOKEN, acl.agent_token, "acl:write", body_limit=J, summary="Set one of the agent's tokens"),
    # -- web UI (appliance/http/handlers/ui.py, ui_proxy.py); the internal endpoints filter their
    # answers by the token themselves (node and service read, by the shapes they answer with)
    R("GET", ui.PREFIX, ui.static, "none", summary="The web UI"),
    R("GET", "/v1/internal/ui/services", ui.services, "none", blocking=True,
      summary="UI: services with instance and check counts"),
    R("GET", "/v1/internal/ui/nodes", ui.nodes, "none", blocking=True,
      summary="UI: nodes with services and checks"),
    R("GET", ui.NODE_PREFIX, ui.node, "none", blocking=True,
      summary="UI: one node with services and checks"),
    R("GET", ui_proxy.PREFIX + "/", ui_proxy.metrics_proxy, "none",
      summary="UI: allow-listed Prometheus query paths"),
    R("GET", "/v1/snapshot", on_first_use("snapshot", "save"), "acl:write", summary="Save a snapshot"),
    R("PUT", "/v1/snapshot", on_first_use("snapshot", "restore_archive"), "acl:write", body_limit=MAX_RESTORE_BYTES,
      summary="Restore a snapshot"),
)


def ui_content_routes(content_path: str) -> tuple[Route, ...]:
    """The web UI under `ui_config.content_path` when it is not /ui/ (the table's route)."""
    if content_path in (ui.PREFIX, "/"):
        return ()
    return (R("GET", content_path, ui.static, "none", summary="The web UI"),)


def check_table(routes: Iterable[Route]) -> list[str]:
    """What is wrong with a route table: duplicate (method, path), a bad ACL or method."""
    problems, seen = [], set()
    for r in routes:
        if (r.method, r.path) in seen:
            problems.append(f"{r.method} {r.path}: declared twice")
        seen.add((r.method, r.path))
        if not ACL.fullmatch(r.acl):
            problems.append(f"{r.method} {r.path}: ACL {r.acl!r} is not <resource>:<level>, filter:... or none")
        if not r.path.startswith(("/v1/", ui.PREFIX)):  # the API, and the web UI's files
            problems.append(f"{r.method} {r.path}: not under /v1/")
    return problems
