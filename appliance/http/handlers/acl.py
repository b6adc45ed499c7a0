"""/v1/acl/*: bootstrap, tokens, policies, roles, templated policies, replication status, and
/v1/agent/token/<type> (reference/security.md §1, §4).

Every handler answers `401 ACL support disabled` when ACLs are off. Permissions were checked by
the route table before the handler runs (appliance/http/authz.py): reads need `acl:read`, writes
`acl:write`; bootstrap, `token/self`, login and logout none. Bodies are checked and shaped by
appliance/acl/objects.py (Consul's texts); what depends on the store (a name or secret taken, the
built-ins) is checked when the write applies (appliance/state/acl.py) and answers 500 with its
text. IDs are generated here (UUID4), times are this agent's clock.

Bootstrap works once; then `403 Permission denied: ACL bootstrap no longer allowed (reset index:
N)` until `N` is written to `<data_dir>/acl-bootstrap-reset` (on the leader), which the next
bootstrap consumes.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.acl.builtin import (
    ANONYMOUS_ID,
    GLOBAL_MANAGEMENT_ID,
    TEMPLATES,
    render_template,
    synthetic_policy,
    template_schema,
)
from appliance.acl.objects import (
    ObjectError,
    canonical,
    is_uuid,
    policy_from_body,
    policy_stub,
    render_policy,
    render_role,
    render_token,
    role_from_body,
    token_from_body,
    token_stub,
)
from appliance.acl.resolve import synthetic_rules
from appliance.http.authz import TOKEN_TYPES, acl_agent, request_identity
from appliance.http.context import HTTPContext
from appliance.http.encoding import read_json
from appliance.http.errors import HTTPError
from appliance.http.paths import path_tail
from appliance.http.query import QueryOptions, meta_headers, read_point
from appliance.http.remote_dc import forward, on_server
from appliance.http.values import Answer, Request, json_answer
from appliance.state.fsm import CommandError

RESET_FILE = "acl-bootstrap-reset"
TOKEN = "/v1/acl/token/"
POLICY = "/v1/acl/policy/"
POLICY_NAME = "/v1/acl/policy/name/"
ROLE = "/v1/acl/role/"
ROLE_NAME = "/v1/acl/role/name/"
TEMPLATE_NAME = "/v1/acl/templated-policy/name/"
TEMPLATE_PREVIEW = "/v1/acl/templated-policy/preview/"
AGENT_TOKEN = "/v1/agent/token/"


def enabled(ctx: HTTPContext) -> None:
    if not ctx.config.acl.enabled:
        raise HTTPError(401, "ACL support disabled")


async def propose(ctx: HTTPContext, cmd: dict[str, Any]) -> Any:
    try:
        return await ctx.consensus.propose({"Type": "acl", **cmd})
    except CommandError as err:
        raise HTTPError(500, str(err)) from None


_STRINGS = frozenset({"AccessorID", "SecretID", "Description", "Name", "ID", "Rules", "AuthMethod", "Type",
                      "DisplayName", "TokenLocality", "Selector", "BindType", "BindName", "BootstrapSecret", "Token",
                      "BearerToken", "ExpirationTime", "ServiceName", "NodeName", "Datacenter", "TemplateName"})
_LISTS = frozenset({"Policies", "Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies", "Datacenters"})
_OBJECTS = frozenset({"Config", "Meta", "BindVars", "TemplateVariables"})
_JSON_TYPES = {str: "string", bool: "bool", int: "number", float: "number", list: "array", dict: "object",
               type(None): "null"}


def _decode_error(what: str, struct: str, field: str, value: Any, want: str) -> HTTPError:
    return HTTPError(400, f"{what} decoding failed: json: cannot unmarshal {_JSON_TYPES.get(type(value), 'value')} "
                          f"into Go struct field {struct}.{field} of type {want}")


def _check_types(body: Any, what: str, struct: str, depth: int = 0) -> None:
    """Refuse a body whose fields have the wrong JSON types, as Go's decoder does (400)."""
    if not isinstance(body, dict):
        raise HTTPError(400, f"{what} decoding failed: json: cannot unmarshal "
                             f"{_JSON_TYPES.get(type(body), 'value')} into Go value of type structs.{struct}")
    for key, value in body.items():
        name = next((n for n in _STRINGS | _LISTS | _OBJECTS | {"Local"} if n.lower() == str(key).lower()), None)
        if name is None or value is None:
            continue
        if name in _STRINGS and not isinstance(value, str):
            raise _decode_error(what, struct, name, value, "string")
        if name == "Local" and not isinstance(value, bool):
            raise _decode_error(what, struct, name, value, "bool")
        if name in _OBJECTS and not isinstance(value, dict):
            raise _decode_error(what, struct, name, value, "map[string]string")
        if name in _LISTS:
            if not isinstance(value, list):
                raise _decode_error(what, struct, name, value, "[]" + ("string" if name == "Datacenters" else name))
            for item in value:
                if name == "Datacenters":
                    if not isinstance(item, str):
                        raise _decode_error(what, struct, name, item, "string")
                elif depth < 2:
                    _check_types(item, what, struct + "." + name, depth + 1)


def body_of(req: Request, what: str, struct: str = "") -> Any:
    try:
        body = read_json(req, empty={})
    except HTTPError as err:
        raise HTTPError(400, f"{what} decoding failed: " + err.text.removeprefix("Request decode failed: ")) from None
    if body is None:
        return {}
    _check_types(body, what, struct or what.replace(" ", ""))
    return body


def checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ObjectError as err:
        raise HTTPError(err.status, err.text) from None


def _list_meta(ctx: HTTPContext) -> dict[str, str]:
    """X-Consul-Index (the ACL tables' index) and the leader headers of a list, as Consul's
    (ACL replication reads the index to skip a round when nothing changed)."""
    return meta_headers(ctx.consensus, ctx.store.watch_index.get("acl", 0), QueryOptions(), False)


async def fresh(ctx: HTTPContext) -> Any:
    await read_point(ctx.consensus, QueryOptions())
    await acl_agent(ctx).ensure_tables()
    return ctx.store.acl


async def can_write(req: Request, ctx: HTTPContext) -> bool:
    ident = await request_identity(req, ctx)
    return ident is None or ident.authz.allowed("acl", "", "write")


# ------------------------------------------------------------------------------ bootstrap


def _reset_index(ctx: HTTPContext, current: int) -> int | None:
    """The index in `<data_dir>/acl-bootstrap-reset` if it matches; the file is consumed."""
    path = os.path.join(ctx.config.data_dir, RESET_FILE) if ctx.config.data_dir else ""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value == 0:
        return None
    if value != current:
        raise HTTPError(500, f"Invalid bootstrap reset index (specified {value}, reset index: {current})")
    os.remove(path)
    return value


async def bootstrap(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    body = canonical(body_of(req, "Request") if req.body else {}, ("BootstrapSecret",))
    tables = await fresh(ctx)
    reset = _reset_index(ctx, tables.bootstrap) if tables.bootstrap else None
    if tables.bootstrap and reset is None:
        raise HTTPError(403, f"Permission denied: ACL bootstrap no longer allowed (reset index: {tables.bootstrap})")
    secret = body.get("BootstrapSecret") or str(uuid.uuid4())
    tok = checked(token_from_body, tables, {"Description": "Bootstrap Token (Global Management)",
                                            "Policies": [{"ID": GLOBAL_MANAGEMENT_ID}]},
                  accessor=str(uuid.uuid4()), secret=secret, now=time.time())
    cmd: dict[str, Any] = {"Op": "bootstrap", "Object": tok}
    if reset is not None:
        cmd["ResetIndex"] = reset
    try:
        rec = await ctx.consensus.propose({"Type": "acl", **cmd})
    except CommandError as err:
        text = str(err)
        raise HTTPError(403 if "bootstrap no longer allowed" in text else 500,
                        ("Permission denied: " + text) if "bootstrap no longer allowed" in text else text) from None
    ctx.log.info("ACL bootstrap completed")
    return json_answer(req, {"ID": rec["SecretID"], **render_token(ctx.store.acl, rec)})


Handler = Callable[[Request, HTTPContext], Awaitable[Answer]]


def _local_token(req: Request, ctx: HTTPContext) -> bool:
    """Whether a token write is of a local token: the body's `Local` (create), the stored token's."""
    if req.method == "PUT" and req.route == TOKEN.rstrip("/"):
        body = body_of(req, "Token", "ACLToken") if req.body else {}
        return isinstance(body, dict) and bool(canonical(body, ("Local",)).get("Local"))
    tok = ctx.store.acl.tokens.get(_accessor(req)[0])
    return bool(tok and tok.get("Local"))


def in_primary(local: Callable[[Request, HTTPContext], bool] | None = None) -> Callable[[Handler], Handler]:
    """In a secondary datacenter, a write of a global ACL object goes to the primary datacenter
    (Consul forwards these RPCs there); replication brings it back (appliance/acl_replication.py).
    A local token stays here, where a secondary has local tokens only with token replication."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(req: Request, ctx: HTTPContext) -> Answer:
            cfg = ctx.config
            if cfg.acl.enabled and cfg.datacenter != cfg.primary_datacenter:
                if local is None or not local(req, ctx):
                    return await forward(req, ctx, cfg.primary_datacenter)
                if not cfg.acl.enable_token_replication:
                    raise HTTPError(500, "Local tokens are disabled")
            return await handler(req, ctx)
        return run
    return wrap


async def replication(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    replicator = acl_agent(ctx).replication
    if replicator is not None:  # a secondary datacenter's server
        return json_answer(req, replicator.status())
    if ctx.raft is None and ctx.config.datacenter != ctx.config.primary_datacenter:
        return await on_server(req, ctx)  # a client agent: its servers replicate
    return json_answer(req, {"Enabled": False, "Running": False, "SourceDatacenter": ctx.config.primary_datacenter
                             if hasattr(ctx.config, "primary_datacenter") else ctx.config.datacenter,
                             "ReplicationType": "", "ReplicatedIndex": 0, "ReplicatedRoleIndex": 0,
                             "ReplicatedTokenIndex": 0, "LastSuccess": "0001-01-01T00:00:00Z",
                             "LastError": "0001-01-01T00:00:00Z", "LastErrorMessage": ""})


# ------------------------------------------------------------------------------ tokens


@in_primary(_local_token)
async def token_create(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    body = body_of(req, "Token", "ACLToken")
    tables = await fresh(ctx)
    tok = checked(token_from_body, tables, body, accessor=str(uuid.uuid4()), secret=str(uuid.uuid4()),
                  now=time.time())
    rec = await propose(ctx, {"Op": "token_set", "Object": tok, "Create": True})
    return json_answer(req, render_token(ctx.store.acl, rec))


def _expanded(ctx: HTTPContext, tok: dict[str, Any]) -> dict[str, Any]:
    tables = ctx.store.acl
    out = render_token(tables, tok)
    policies = [render_policy(tables.policies[link["ID"]]) for link in tok.get("Policies") or ()
                if link["ID"] in tables.policies]
    roles = [render_role(tables, tables.roles[link["ID"]]) for link in tok.get("Roles") or ()
             if link["ID"] in tables.roles]
    for holder in [tok, *(tables.roles[link["ID"]] for link in tok.get("Roles") or () if link["ID"] in tables.roles)]:
        for rules in synthetic_rules(holder, ctx.config.datacenter):
            policies.append(synthetic_policy(rules, "synthetic policy"))
    out.update({"ExpandedPolicies": policies, "ExpandedRoles": roles, "NamespaceDefaultPolicyIDs": None,
                "NamespaceDefaultRoleIDs": None, "AgentACLDefaultPolicy": ctx.config.acl.default_policy,
                "AgentACLDownPolicy": ctx.config.acl.down_policy, "ResolvedByAgent": ctx.config.node_name})
    return out


async def token_self(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    await fresh(ctx)
    agent = acl_agent(ctx)
    ident = await agent.resolve(agent.secret(req)[0])  # a client agent: as a server resolves it
    if ident.token is None:
        raise HTTPError(404, "Supplied token does not exist")
    return json_answer(req, render_token(ctx.store.acl, ident.token))


def _accessor(req: Request) -> tuple[str, str]:
    tail = path_tail(req, TOKEN)
    if tail.endswith("/clone"):
        return tail[: -len("/clone")], "clone"
    if not tail:
        raise HTTPError(400, "Missing token AccessorID")
    return tail, ""


def _existing_token(tables: Any, accessor: str) -> dict[str, Any]:
    if not is_uuid(accessor):
        raise HTTPError(500, "UUID must be 36 characters")
    tok = tables.tokens.get(accessor)
    if tok is None:
        raise HTTPError(404, "Requested token does not exist: ACL not found")
    return dict(tok)


def _on_server(ctx: HTTPContext) -> bool:
    """A client agent's replica holds tokens without their secrets: what shows or keeps a token's
    SecretID is answered by a server (as every ACL request is in Consul)."""
    return ctx.raft is None and ctx.config.acl.enabled


async def token_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    if _on_server(ctx):
        return await on_server(req, ctx)
    accessor, _ = _accessor(req)
    tables = await fresh(ctx)
    tok = _existing_token(tables, accessor)
    if "expanded" in req.query:
        return json_answer(req, _expanded(ctx, tok))
    return json_answer(req, render_token(tables, tok, await can_write(req, ctx)))


@in_primary(_local_token)
async def token_update(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    if _on_server(ctx):
        return await on_server(req, ctx)
    accessor, action = _accessor(req)
    body = body_of(req, "Token", "ACLToken")
    tables = await fresh(ctx)
    if action == "clone":
        prev = _existing_token(tables, accessor)
        desc = canonical(body, ("Description",)).get("Description") or prev.get("Description", "")
        src = {**prev, "Description": desc, "AccessorID": "", "SecretID": "", "ExpirationTime": None,
               "AuthMethod": None}
        tok = checked(token_from_body, tables, src, accessor=str(uuid.uuid4()), secret=str(uuid.uuid4()),
                      now=time.time())
        if prev.get("ExpirationTime"):
            tok["ExpirationTime"] = prev["ExpirationTime"]
        rec = await propose(ctx, {"Op": "token_set", "Object": tok, "Create": True})
        return json_answer(req, render_token(ctx.store.acl, rec))
    b = canonical(body, ("AccessorID",))
    if b.get("AccessorID") and b["AccessorID"] != accessor:
        raise HTTPError(400, "Token Accessor ID in URL and payload do not match")
    if not is_uuid(accessor):
        raise HTTPError(500, "AccessorID is not a valid UUID")
    prev = tables.tokens.get(accessor)
    if prev is None:
        raise HTTPError(500, f'Cannot find token "{accessor}"')
    if prev["SecretID"] in ("allow", "deny", "manage"):
        raise HTTPError(403, "Permission denied: Cannot modify root ACL")
    tok = checked(token_from_body, tables, body, accessor=accessor, secret="", now=time.time(), prev=prev)
    rec = await propose(ctx, {"Op": "token_set", "Object": tok})
    return json_answer(req, render_token(ctx.store.acl, rec))


@in_primary(_local_token)
async def token_delete(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    accessor, _ = _accessor(req)
    if not is_uuid(accessor):
        raise HTTPError(500, "Accessor ID is missing or an invalid UUID")
    tables = await fresh(ctx)
    if accessor == ANONYMOUS_ID:
        raise HTTPError(500, "Delete operation not permitted on the anonymous token")
    ident = await request_identity(req, ctx)
    if ident is not None and ident.accessor == accessor:
        raise HTTPError(500, "Deletion of the request's authorization token is not permitted")
    if accessor not in tables.tokens:
        raise HTTPError(404, "Cannot find token to delete")
    await propose(ctx, {"Op": "token_delete", "ID": accessor})
    return json_answer(req, True)


async def token_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    if _on_server(ctx):
        return await on_server(req, ctx)
    tables = await fresh(ctx)
    show = await can_write(req, ctx)
    q = req.query
    out = []
    for accessor in sorted(tables.tokens):
        tok = tables.tokens[accessor]
        if q.get("policy") and all(link["ID"] != q["policy"] for link in tok.get("Policies") or ()):
            continue
        if q.get("role") and all(link["ID"] != q["role"] for link in tok.get("Roles") or ()):
            continue
        if q.get("authmethod") and tok.get("AuthMethod") != q["authmethod"]:
            continue
        if q.get("servicename") and all(s["ServiceName"] != q["servicename"]
                                        for s in tok.get("ServiceIdentities") or ()):
            continue
        out.append(token_stub(tables, tok, show))
    return json_answer(req, out, headers=_list_meta(ctx))


# ------------------------------------------------------------------------------ policies


@in_primary()
async def policy_create(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    body = body_of(req, "Policy", "ACLPolicy")
    if canonical(body, ("ID",)).get("ID"):
        raise HTTPError(400, "Cannot specify the ID when creating a new policy")
    tables = await fresh(ctx)
    policy = checked(policy_from_body, tables, body, pid=str(uuid.uuid4()), prev=None)
    return json_answer(req, render_policy(await propose(ctx, {"Op": "policy_set", "Object": policy})))


def _lookup(tables: Any, req: Request, kind: str) -> dict[str, Any]:
    """The policy or role a `<kind>/<id>` or `<kind>/name/<name>` path names (Consul's texts)."""
    prefix = POLICY if kind == "policy" else ROLE
    if req.raw_path.startswith(prefix + "name/"):
        name = path_tail(req, prefix + "name/")
        if not name:
            raise HTTPError(400, f"Missing {kind} Name")
        found = (tables.policy_by_name if kind == "policy" else tables.role_by_name)(name)
    else:
        oid = path_tail(req, prefix)
        if not oid:
            raise HTTPError(400, f"Missing {kind} ID")
        if not is_uuid(oid):
            raise HTTPError(500, "UUID must be 36 characters")
        found = (tables.policies if kind == "policy" else tables.roles).get(oid)
    if found is None:
        raise HTTPError(404, f"Requested {kind} does not exist: ACL not found")
    return found


async def policy_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    return json_answer(req, render_policy(_lookup(await fresh(ctx), req, "policy")))


@in_primary()
async def policy_update(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    pid = path_tail(req, POLICY)
    if not pid:
        raise HTTPError(400, "Missing policy ID")
    body = body_of(req, "Policy", "ACLPolicy")
    given = canonical(body, ("ID",)).get("ID")
    if given and given != pid:
        raise HTTPError(400, "Policy ID in URL and payload do not match")
    tables = await fresh(ctx)
    if not is_uuid(pid):
        raise HTTPError(500, "Policy ID invalid UUID")
    prev = tables.policies.get(pid)
    if prev is None:
        raise HTTPError(500, f"cannot find policy {pid}")
    policy = checked(policy_from_body, tables, body, pid=pid, prev=prev)
    return json_answer(req, render_policy(await propose(ctx, {"Op": "policy_set", "Object": policy})))


@in_primary()
async def policy_delete(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    pid = path_tail(req, POLICY)
    if not pid:
        raise HTTPError(400, "Missing policy ID")
    tables = await fresh(ctx)
    if pid != GLOBAL_MANAGEMENT_ID and pid not in tables.policies:
        raise HTTPError(404, "Cannot find policy to delete")
    await propose(ctx, {"Op": "policy_delete", "ID": pid})
    return json_answer(req, True)


async def policy_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    tables = await fresh(ctx)
    return json_answer(req, [policy_stub(tables.policies[pid]) for pid in sorted(tables.policies)],
                       headers=_list_meta(ctx))


# ------------------------------------------------------------------------------ roles


@in_primary()
async def role_create(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    body = body_of(req, "Role", "ACLRole")
    if canonical(body, ("ID",)).get("ID"):
        raise HTTPError(400, "Cannot specify the ID when creating a new role")
    tables = await fresh(ctx)
    role = checked(role_from_body, tables, body, rid=str(uuid.uuid4()))
    return json_answer(req, render_role(ctx.store.acl, await propose(ctx, {"Op": "role_set", "Object": role})))


async def role_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    tables = await fresh(ctx)
    return json_answer(req, render_role(tables, _lookup(tables, req, "role")))


@in_primary()
async def role_update(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    rid = path_tail(req, ROLE)
    if not rid:
        raise HTTPError(400, "Missing role ID")
    body = body_of(req, "Role", "ACLRole")
    given = canonical(body, ("ID",)).get("ID")
    if given and given != rid:
        raise HTTPError(400, "Role ID in URL and payload do not match")
    tables = await fresh(ctx)
    if not is_uuid(rid):
        raise HTTPError(500, "Role ID invalid UUID")
    if rid not in tables.roles:
        raise HTTPError(500, f"cannot find role {rid}")
    role = checked(role_from_body, tables, body, rid=rid)
    return json_answer(req, render_role(ctx.store.acl, await propose(ctx, {"Op": "role_set", "Object": role})))


@in_primary()
async def role_delete(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    rid = path_tail(req, ROLE)
    if not rid:
        raise HTTPError(400, "Missing role ID")
    if rid not in (await fresh(ctx)).roles:
        raise HTTPError(404, "Cannot find role to delete")
    await propose(ctx, {"Op": "role_delete", "ID": rid})
    return json_answer(req, True)


async def role_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    tables = await fresh(ctx)
    want = req.query.get("policy", "")
    roles = [tables.roles[rid] for rid in sorted(tables.roles)]
    return json_answer(req, [render_role(tables, r) for r in roles
                             if not want or any(link["ID"] == want for link in r.get("Policies") or ())],
                       headers=_list_meta(ctx))


# ------------------------------------------------------------------------------ templated policies


def _template(name: str) -> dict[str, Any]:
    description, rules, _ = TEMPLATES[name]
    return {"TemplateName": name, "Schema": template_schema(name), "Template": rules, "Description": description}


async def templated_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    return json_answer(req, {name: _template(name) for name in sorted(TEMPLATES)})


async def templated_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    name = path_tail(req, TEMPLATE_NAME)
    if name not in TEMPLATES:
        raise HTTPError(404, "Requested templated policy does not exist: ACL not found")
    return json_answer(req, _template(name))


async def templated_preview(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    name = path_tail(req, TEMPLATE_PREVIEW)
    if name not in TEMPLATES:
        raise HTTPError(404, "Requested templated policy does not exist: ACL not found")
    variables = canonical(body_of(req, "Templated policy") or {}, ("Name",))
    if TEMPLATES[name][2] and not variables.get("Name"):
        raise HTTPError(400, f'Failed to validate templated policy variables for "{name}": name: Invalid type. '
                             "Expected: string, given: null")
    rules = render_template(name, {"Name": str(variables.get("Name", ""))})
    return json_answer(req, synthetic_policy(rules, f'synthetic policy generated from templated policy: {name}'))


# ------------------------------------------------------------------------------ agent tokens


async def agent_token(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    kind = TOKEN_TYPES.get(path_tail(req, AGENT_TOKEN))
    if kind is None:
        raise HTTPError(404, f"Token {path_tail(req, AGENT_TOKEN)!r} is unknown".replace("'", '"'))
    body = canonical(body_of(req, "Request"), ("Token",))
    token = body.get("Token") or ""
    if not isinstance(token, str):
        raise HTTPError(400, "Request decode failed: Token must be a string")
    acl_agent(ctx).tokens.set(kind, token)
    ctx.log.info("Updated agent's ACL token: token=%s", kind)
    if kind in ("default", "agent", "config_file_service_registration"):  # as Consul: a full anti-entropy sync
        ctx.control.full_sync_soon()
    return Answer()
