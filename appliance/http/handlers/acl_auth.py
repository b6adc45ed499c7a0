"""/v1/acl/auth-method*, /v1/acl/binding-rule*, /v1/acl/login and /v1/acl/logout.

Auth methods and binding rules are stored objects with Consul's validation texts. Every known
type (`jwt`, `kubernetes`, `oidc`, `aws-iam`) can be stored; only `jwt` logs in (static
`JWTValidationPubKeys`, or a JWKS document from `JWKSURL` as a `file://` URL or a path; JWT
checks in appliance/acl/jwt.py), any other type is refused at login. A login whose claims match
binding rules gets a new token holding what those rules bind (roles, policies, service and node
identities, templated policies; `${value.x}` in a BindName is filled from the claims), with the
method's TokenLocality and MaxTokenTTL; logout deletes a token that login made. As in Consul,
where both are server RPCs, a client agent runs them on a server of its datacenter (the server
verifies the bearer token with its own keys and writes the token).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from appliance.acl import jwt
from appliance.acl.objects import NAME_RE, canonical, is_uuid, render_token, token_from_body
from appliance.config.durations import DurationError, format_duration_ns, parse_duration_ns
from appliance.http.authz import acl_agent
from appliance.http.context import HTTPContext
from appliance.http.errors import HTTPError
from appliance.http.handlers.acl import body_of, checked, enabled, fresh, propose
from appliance.http.paths import AUTH_METHOD_PREFIX as METHOD, BINDING_RULE_PREFIX as RULE, path_tail
from appliance.http.remote_dc import on_server
from appliance.http.values import Answer, Request, json_answer

TYPES = ("aws-iam", "jwt", "kubernetes", "oidc")
BIND_TYPES = ("service", "node", "role", "policy", "templated-policy")
METHOD_FIELDS = ("Name", "Type", "DisplayName", "Description", "MaxTokenTTL", "TokenLocality", "Config",
                 "CreateIndex", "ModifyIndex")
RULE_FIELDS = ("ID", "Description", "AuthMethod", "Selector", "BindType", "BindName", "BindVars",
               "CreateIndex", "ModifyIndex")
_VAR = re.compile(r"\$\{(value\.[\w\-]+)\}")


# ------------------------------------------------------------------------------ auth methods


def _method(body: Any, name: str | None) -> dict[str, Any]:
    b = canonical(body, METHOD_FIELDS)
    if name is not None:
        if b.get("Name") and b["Name"] != name:
            raise HTTPError(400, "Auth Method Name in URL and payload do not match")
        b["Name"] = name
    if not b.get("Name"):
        raise HTTPError(500, "Invalid Auth Method: no Name is set")
    if not NAME_RE.match(str(b["Name"])):
        raise HTTPError(500, "Invalid Auth Method: invalid Name. Only alphanumeric characters, '-' and '_' are allowed")
    if b.get("Type") not in TYPES:
        raise HTTPError(500, f"Invalid Auth Method: Type should be one of: [{' '.join(TYPES)}]")
    if b.get("TokenLocality", "") not in ("", "local", "global"):
        raise HTTPError(500, 'Invalid Auth Method: TokenLocality should be one of "local" or "global"')
    ttl = b.get("MaxTokenTTL") or ""
    if ttl:
        try:
            ns = parse_duration_ns(ttl) if isinstance(ttl, str) else int(ttl)
        except (DurationError, ValueError, TypeError):
            raise HTTPError(400, "Request decode failed: invalid MaxTokenTTL") from None
        ttl = format_duration_ns(ns)
    config = b.get("Config") or {}
    if not isinstance(config, dict):
        raise HTTPError(400, "Request decode failed: Config must be an object")
    if b["Type"] == "jwt":
        sources = [k for k in ("JWTValidationPubKeys", "JWKSURL", "OIDCDiscoveryURL") if config.get(k)]
        if len(sources) != 1:
            raise HTTPError(500, "Invalid Auth Method: exactly one of 'JWTValidationPubKeys', 'JWKSURL', or "
                                 "'OIDCDiscoveryURL' must be set for type \"jwt\"")
        try:
            if config.get("JWTValidationPubKeys"):
                jwt.pem_keys(list(config["JWTValidationPubKeys"]))
        except jwt.JWTError as err:
            raise HTTPError(500, f"Invalid Auth Method: {err}") from None
    out = {"Name": b["Name"], "Type": b["Type"], "DisplayName": str(b.get("DisplayName") or ""),
           "Description": str(b.get("Description") or ""), "TokenLocality": b.get("TokenLocality") or "",
           "Config": config}
    if ttl:
        out["MaxTokenTTL"] = ttl
    return out


def _render_method(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in METHOD_FIELDS if k in m and (m[k] not in ("", None) or k in ("Name", "Type"))}


async def method_create(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    method = _method(body_of(req, "AuthMethod", "ACLAuthMethod"), None)
    if method["Name"] in (await fresh(ctx)).methods:
        raise HTTPError(500, f'Invalid Auth Method: Auth Method with Name "{method["Name"]}" already exists')
    return json_answer(req, _render_method(await propose(ctx, {"Op": "method_set", "Object": method})))


def _method_name(req: Request) -> str:
    name = path_tail(req, METHOD)
    if not name:
        raise HTTPError(400, "Missing auth method name")
    return name


async def method_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    found = (await fresh(ctx)).methods.get(_method_name(req))
    if found is None:
        raise HTTPError(404, "Requested auth method does not exist: ACL not found")
    return json_answer(req, _render_method(found))


async def method_update(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    name = _method_name(req)
    method = _method(body_of(req, "AuthMethod", "ACLAuthMethod"), name)
    prev = (await fresh(ctx)).methods.get(name)
    if prev is None:
        raise HTTPError(500, f'Invalid Auth Method: cannot find auth method "{name}"')
    if prev["Type"] != method["Type"]:
        raise HTTPError(500, "Invalid Auth Method: the Type field is immutable")
    return json_answer(req, _render_method(await propose(ctx, {"Op": "method_set", "Object": method})))


async def method_delete(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    name = _method_name(req)
    if name not in (await fresh(ctx)).methods:
        raise HTTPError(404, "Cannot find auth method to delete")
    await propose(ctx, {"Op": "method_delete", "ID": name})
    return json_answer(req, True)


async def method_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    tables = await fresh(ctx)
    return json_answer(req, [_render_method(tables.methods[n]) for n in sorted(tables.methods)])


# ------------------------------------------------------------------------------ binding rules


def _rule(tables: Any, body: Any, rid: str) -> dict[str, Any]:
    b = canonical(body, RULE_FIELDS)
    method = b.get("AuthMethod") or ""
    if not method:
        raise HTTPError(500, "Invalid Binding Rule: no AuthMethod is set")
    if method not in tables.methods:
        raise HTTPError(500, f'Invalid Binding Rule: unknown auth method "{method}"')
    if b.get("BindType") not in BIND_TYPES:
        raise HTTPError(500, f'Invalid Binding Rule: unknown BindType "{b.get("BindType") or ""}"')
    if not b.get("BindName") and b["BindType"] != "templated-policy":
        raise HTTPError(500, "Invalid Binding Rule: no BindName is set")
    selector = str(b.get("Selector") or "")
    try:
        jwt.check_selector(selector)
    except jwt.SelectorError as err:
        raise HTTPError(500, f"Invalid Binding Rule: {err}") from None
    out = {"ID": rid, "Description": str(b.get("Description") or ""), "AuthMethod": method, "Selector": selector,
           "BindType": b["BindType"], "BindName": str(b.get("BindName") or "")}
    if b.get("BindVars"):
        out["BindVars"] = b["BindVars"]
    return out


async def rule_create(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    body = body_of(req, "BindingRule", "ACLBindingRule")
    if canonical(body, ("ID",)).get("ID"):
        raise HTTPError(400, "Cannot specify the ID when creating a new binding rule")
    rule = _rule(await fresh(ctx), body, str(uuid.uuid4()))
    return json_answer(req, await propose(ctx, {"Op": "rule_set", "Object": rule}))


def _rule_id(req: Request) -> str:
    rid = path_tail(req, RULE)
    if not rid:
        raise HTTPError(400, "Missing binding rule ID")
    return rid


async def rule_read(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    rid = _rule_id(req)
    if not is_uuid(rid):
        raise HTTPError(500, "UUID must be 36 characters")
    found = (await fresh(ctx)).rules.get(rid)
    if found is None:
        raise HTTPError(404, "Requested binding rule does not exist: ACL not found")
    return json_answer(req, found)


async def rule_update(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    rid = _rule_id(req)
    body = body_of(req, "BindingRule", "ACLBindingRule")
    given = canonical(body, ("ID",)).get("ID")
    if given and given != rid:
        raise HTTPError(400, "BindingRule ID in URL and payload do not match")
    tables = await fresh(ctx)
    if rid not in tables.rules:
        raise HTTPError(500, f"Cannot find binding rule {rid}")
    return json_answer(req, await propose(ctx, {"Op": "rule_set", "Object": _rule(tables, body, rid)}))


async def rule_delete(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    rid = _rule_id(req)
    if rid not in (await fresh(ctx)).rules:
        raise HTTPError(404, "Cannot find binding rule to delete")
    await propose(ctx, {"Op": "rule_delete", "ID": rid})
    return json_answer(req, True)


async def rule_list(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    tables = await fresh(ctx)
    want = req.query.get("authmethod", "")
    return json_answer(req, [tables.rules[r] for r in sorted(tables.rules)
                             if not want or tables.rules[r]["AuthMethod"] == want])


# ------------------------------------------------------------------------------ login, logout


def _keys(config: dict[str, Any]) -> list[tuple[str, Any]]:
    if config.get("JWTValidationPubKeys"):
        return jwt.pem_keys(list(config["JWTValidationPubKeys"]))
    url = str(config.get("JWKSURL") or "")
    if not url:
        raise HTTPError(500, "OIDC discovery is not supported by this agent: configure JWTValidationPubKeys or "
                             "a JWKS file")
    path = url.removeprefix("file://")
    if "://" in path:
        raise HTTPError(500, f"JWKSURL {url!r}: only file:// JWKS documents are read by this agent")
    try:
        with open(path, encoding="utf-8") as f:
            return jwt.jwks_keys(f.read())
    except OSError as err:
        raise HTTPError(500, f"failed to read JWKS: {err}") from None


def _bind(rules: list[dict[str, Any]], values: dict[str, str], dc: str) -> dict[str, Any]:
    def name(text: str) -> str:
        return _VAR.sub(lambda m: values.get(m.group(1)[len("value."):], ""), text)
    body: dict[str, list[Any]] = {"Roles": [], "Policies": [], "ServiceIdentities": [], "NodeIdentities": [],
                                  "TemplatedPolicies": []}
    for rule in rules:
        kind, bound = rule["BindType"], name(rule["BindName"])
        if kind == "role":
            body["Roles"].append({"Name": bound})
        elif kind == "policy":
            body["Policies"].append({"Name": bound})
        elif kind == "service":
            body["ServiceIdentities"].append({"ServiceName": bound})
        elif kind == "node":
            body["NodeIdentities"].append({"NodeName": bound, "Datacenter": dc})
        else:
            variables = {k: name(str(v)) for k, v in (rule.get("BindVars") or {}).items()}
            body["TemplatedPolicies"].append({"TemplateName": bound, "TemplateVariables": variables})
    return body


async def login(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    if ctx.raft is None:  # a client agent: a server checks the bearer token and makes the token
        return await on_server(req, ctx)
    b = canonical(body_of(req, "Request", "ACLLoginParams"), ("AuthMethod", "BearerToken", "Meta"))
    tables = await fresh(ctx)
    name = str(b.get("AuthMethod") or "")
    method = tables.methods.get(name)
    if method is None:
        raise HTTPError(403, f'ACL not found: auth method "{name}" not found')
    if method["Type"] != "jwt":
        raise HTTPError(500, f'no auth method validator factory registered for type "{method["Type"]}"')
    if method.get("TokenLocality") == "global" and ctx.config.datacenter != ctx.config.primary_datacenter:
        # global tokens are the primary's (a secondary would lose this one to ACL replication)
        raise HTTPError(500, "creating global tokens via auth methods is only enabled in the primary datacenter")
    config = method.get("Config") or {}
    try:
        claims = jwt.verify(str(b.get("BearerToken") or ""), _keys(config), config, time.time())
    except jwt.JWTError as err:
        raise HTTPError(403, f"Permission denied: {err}") from None
    values, lists = jwt.mapped(claims, config)
    matched = [r for _, r in sorted(tables.rules.items())
               if r["AuthMethod"] == name and jwt.matches(r.get("Selector", ""), values, lists)]
    if not matched:
        raise HTTPError(403, "Permission denied")
    body = _bind(matched, values, ctx.config.datacenter)
    meta = b.get("Meta") or {}
    body["Description"] = "token created via login" + (": " + json.dumps(meta, separators=(",", ":")) if meta else "")
    body["Local"] = method.get("TokenLocality") != "global"
    if method.get("MaxTokenTTL"):
        body["ExpirationTTL"] = method["MaxTokenTTL"]
    tok = checked(token_from_body, tables, body, accessor=str(uuid.uuid4()), secret=str(uuid.uuid4()),
                  now=time.time())
    tok["AuthMethod"] = name
    rec = await propose(ctx, {"Op": "token_set", "Object": tok, "Create": True})
    return json_answer(req, render_token(ctx.store.acl, rec))


async def logout(req: Request, ctx: HTTPContext) -> Answer:
    enabled(ctx)
    if not req.token:
        raise HTTPError(401, "Supplied token does not exist")
    if ctx.raft is None:  # a client agent: the server deletes the token it was called with
        return await on_server(req, ctx)
    await fresh(ctx)
    ident = acl_agent(ctx).resolve_secret(req.token)
    if ident.token is None or not ident.token.get("AuthMethod"):
        raise HTTPError(403, "Permission denied: token wasn't created via login")
    await propose(ctx, {"Op": "token_delete", "ID": ident.accessor})
    return json_answer(req, True)
