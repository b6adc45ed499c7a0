"""``cairn acl policy|role|auth-method|binding-rule ...``: Consul's flags and output."""

from __future__ import annotations

import json
from typing import Any

from appliance.cli import acl_format as fmt
from appliance.cli.acl_common import call, link_flags, linked, lister, parser, read_value, resolve_id, show
from appliance.cli.flags import CliError, UsageError, out
from appliance.cli.http_client import HTTPClient, client_from_args, quote_path


def _id_or_name(p: Any) -> None:
    p.flag("id", default="", metavar="<string>", help="ID (or unique prefix) of the object.")
    p.flag("name", default="", metavar="<string>", help="Name of the object.")


def _target(client: HTTPClient, kind: str, args: Any) -> str:
    """The API path of the policy or role that -id or -name names."""
    if args.id:
        return f"/v1/acl/{kind}/{resolve_id(client, kind, args.id)}"
    if args.name:
        return f"/v1/acl/{kind}/name/{quote_path(args.name)}"
    raise UsageError("Must specify either the -id or -name parameters")


# ------------------------------------------------------------------------------ policies


def _policy_flags(p: Any) -> None:
    p.flag("description", default=None, metavar="<string>", help="A description of the policy.")
    p.flag("rules", default=None, metavar="<string>", help="The rules: HCL or JSON, @FILE or - for stdin.")
    p.flag("valid-datacenter", action="append", default=[], metavar="<string>",
           help="A datacenter the policy is valid in (repeatable).")


def policy_create(argv: list[str]) -> int:
    p = parser("policy create", "policy create -name NAME [options]", "Creates a policy.")
    p.flag("name", default="", metavar="<string>", help="The policy's name.")
    p.flag("from-file", default="", metavar="<string>", help="Read the rules from this file.")
    _policy_flags(p)
    args = p.parse(argv)
    if not args.name:
        raise UsageError("Missing required '-name' flag")
    rules = read_value(args.rules) if args.rules else (read_value("@" + args.from_file) if args.from_file else "")
    body = {"Name": args.name, "Description": args.description or "", "Rules": rules,
            "Datacenters": args.valid_datacenter}
    policy = call(client_from_args(args), "PUT", "/v1/acl/policy", body, "Failed to create new policy")
    show(args, policy, fmt.policy(policy, args.meta))
    return 0


def policy_read(argv: list[str]) -> int:
    p = parser("policy read", "policy read [options] -id POLICYID|-name NAME", "Reads a policy.")
    _id_or_name(p)
    args = p.parse(argv)
    client = client_from_args(args)
    policy = call(client, "GET", _target(client, "policy", args), None, "Error reading policy")
    show(args, policy, fmt.policy(policy, args.meta))
    return 0


def policy_update(argv: list[str]) -> int:
    p = parser("policy update", "policy update [options] -id POLICYID", "Updates a policy.")
    _id_or_name(p)
    _policy_flags(p)
    args = p.parse(argv)
    client = client_from_args(args)
    path = _target(client, "policy", args)
    cur = call(client, "GET", path, None, "Error when retrieving current policy")
    body = {"ID": cur["ID"], "Name": args.name or cur["Name"],
            "Description": cur.get("Description", "") if args.description is None else args.description,
            "Rules": cur.get("Rules", "") if args.rules is None else read_value(args.rules),
            "Datacenters": args.valid_datacenter or cur.get("Datacenters") or []}
    policy = call(client, "PUT", f"/v1/acl/policy/{cur['ID']}", body, "Failed to update policy")
    show(args, policy, fmt.policy(policy, args.meta))
    return 0


def policy_delete(argv: list[str]) -> int:
    p = parser("policy delete", "policy delete [options] -id POLICYID|-name NAME", "Deletes a policy.",
               show=False)
    _id_or_name(p)
    args = p.parse(argv)
    client = client_from_args(args)
    pid = call(client, "GET", _target(client, "policy", args), None, "Error determining policy ID")["ID"]
    call(client, "DELETE", f"/v1/acl/policy/{pid}", None, f"Error deleting policy {pid!r}")
    out(f'Policy "{pid}" deleted successfully')
    return 0


# ------------------------------------------------------------------------------ roles


def role_create(argv: list[str]) -> int:
    p = parser("role create", "role create -name NAME [options]", "Creates a role.")
    p.flag("name", default="", metavar="<string>", help="The role's name.")
    p.flag("description", default="", metavar="<string>", help="A description of the role.")
    link_flags(p, roles=False)
    args = p.parse(argv)
    if not args.name:
        raise UsageError("Missing required '-name' flag")
    client = client_from_args(args)
    body = {"Name": args.name, "Description": args.description, **linked(client, args, roles=False)}
    if not any(body.get(k) for k in ("Policies", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies")):
        raise CliError("Cannot create a role without specifying -policy-name, -policy-id, -service-identity, "
                       "-node-identity, or -templated-policy at least once")
    role = call(client, "PUT", "/v1/acl/role", body, "Failed to create new role")
    show(args, role, fmt.role(role, args.meta))
    return 0


def role_read(argv: list[str]) -> int:
    p = parser("role read", "role read [options] -id ROLEID|-name NAME", "Reads a role.")
    _id_or_name(p)
    args = p.parse(argv)
    client = client_from_args(args)
    role = call(client, "GET", _target(client, "role", args), None, "Error reading role")
    show(args, role, fmt.role(role, args.meta))
    return 0


def role_update(argv: list[str]) -> int:
    p = parser("role update", "role update [options] -id ROLEID", "Updates a role.")
    p.flag("id", default="", metavar="<string>", help="ID (or unique prefix) of the role.")
    p.flag("name", default="", metavar="<string>", help="A new name.")
    p.flag("description", default=None, metavar="<string>", help="A new description.")
    link_flags(p, roles=False)
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Cannot update a role without specifying the -id parameter")
    client = client_from_args(args)
    rid = resolve_id(client, "role", args.id)
    cur = call(client, "GET", f"/v1/acl/role/{rid}", None, "Error when retrieving current role")
    new = linked(client, args, roles=False)
    body = {"ID": rid, "Name": args.name or cur["Name"],
            "Description": cur.get("Description", "") if args.description is None else args.description,
            **{k: (cur.get(k) or []) + (new.get(k) or []) for k in ("Policies", "ServiceIdentities",
                                                                     "NodeIdentities", "TemplatedPolicies")}}
    role = call(client, "PUT", f"/v1/acl/role/{rid}", body, "Failed to update role")
    show(args, role, fmt.role(role, args.meta))
    return 0


def role_delete(argv: list[str]) -> int:
    p = parser("role delete", "role delete [options] -id ROLEID|-name NAME", "Deletes a role.", show=False)
    _id_or_name(p)
    args = p.parse(argv)
    client = client_from_args(args)
    rid = call(client, "GET", _target(client, "role", args), None, "Error determining role ID")["ID"]
    call(client, "DELETE", f"/v1/acl/role/{rid}", None, f"Error deleting role {rid!r}")
    out(f'Role "{rid}" deleted successfully')
    return 0


# ------------------------------------------------------------------------------ auth methods, binding rules


def method_create(argv: list[str]) -> int:
    p = parser("auth-method create", "auth-method create -type TYPE -name NAME [options]", "Creates an auth method.")
    p.flag("type", default="", metavar="<string>", help="jwt, kubernetes, oidc or aws-iam.")
    p.flag("name", default="", metavar="<string>", help="The auth method's name.")
    p.flag("display-name", default="", metavar="<string>", help="A name to show.")
    p.flag("description", default="", metavar="<string>", help="A description.")
    p.flag("max-token-ttl", default="", metavar="<duration>", help="The lifetime of the tokens it makes.")
    p.flag("token-locality", default="", metavar="<string>", help='"local" or "global".')
    p.flag("config", default="", metavar="<string>", help="The method's configuration: JSON, @FILE or -.")
    args = p.parse(argv)
    if not args.type:
        raise UsageError("Missing required '-type' flag")
    if not args.name:
        raise UsageError("Missing required '-name' flag")
    try:
        config = json.loads(read_value(args.config)) if args.config else {}
    except ValueError as exc:
        raise CliError(f"Error parsing JSON for auth method config: {exc}") from None
    body = {"Name": args.name, "Type": args.type, "DisplayName": args.display_name,
            "Description": args.description, "MaxTokenTTL": args.max_token_ttl,
            "TokenLocality": args.token_locality, "Config": config}
    method = call(client_from_args(args), "PUT", "/v1/acl/auth-method", body, "Failed to create new auth method")
    show(args, method, fmt.auth_method(method, args.meta))
    return 0


def method_read(argv: list[str]) -> int:
    p = parser("auth-method read", "auth-method read -name NAME [options]", "Reads an auth method.")
    p.flag("name", default="", metavar="<string>", help="The auth method's name.")
    args = p.parse(argv)
    if not args.name:
        raise UsageError("Must specify the -name parameter")
    method = call(client_from_args(args), "GET", f"/v1/acl/auth-method/{quote_path(args.name)}", None,
                  "Error reading auth method")
    show(args, method, fmt.auth_method(method, args.meta))
    return 0


def method_delete(argv: list[str]) -> int:
    p = parser("auth-method delete", "auth-method delete -name NAME [options]", "Deletes an auth method.",
               show=False)
    p.flag("name", default="", metavar="<string>", help="The auth method's name.")
    args = p.parse(argv)
    if not args.name:
        raise UsageError("Must specify the -name parameter")
    call(client_from_args(args), "DELETE", f"/v1/acl/auth-method/{quote_path(args.name)}", None,
         f"Error deleting auth method {args.name!r}")
    out(f'Auth method "{args.name}" deleted successfully')
    return 0


def rule_create(argv: list[str]) -> int:
    p = parser("binding-rule create", "binding-rule create -method NAME -bind-type TYPE -bind-name NAME [options]",
               "Creates a binding rule.")
    p.flag("method", default="", metavar="<string>", help="The auth method the rule belongs to.")
    p.flag("description", default="", metavar="<string>", help="A description.")
    p.flag("selector", default="", metavar="<string>", help="Which logins the rule applies to.")
    p.flag("bind-type", default="service", metavar="<string>",
           help="service, node, role, policy or templated-policy.")
    p.flag("bind-name", default="", metavar="<string>", help="The name to bind (${value.x} allowed).")
    args = p.parse(argv)
    if not args.method:
        raise UsageError("Missing required '-method' flag")
    body = {"AuthMethod": args.method, "Description": args.description, "Selector": args.selector,
            "BindType": args.bind_type, "BindName": args.bind_name}
    rule = call(client_from_args(args), "PUT", "/v1/acl/binding-rule", body, "Failed to create new binding rule")
    show(args, rule, fmt.binding_rule(rule, args.meta))
    return 0


def rule_read(argv: list[str]) -> int:
    p = parser("binding-rule read", "binding-rule read -id ID [options]", "Reads a binding rule.")
    p.flag("id", default="", metavar="<string>", help="The rule's ID.")
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Must specify the -id parameter")
    rule = call(client_from_args(args), "GET", f"/v1/acl/binding-rule/{args.id}", None, "Error reading binding rule")
    show(args, rule, fmt.binding_rule(rule, args.meta))
    return 0


def rule_delete(argv: list[str]) -> int:
    p = parser("binding-rule delete", "binding-rule delete -id ID [options]", "Deletes a binding rule.", show=False)
    p.flag("id", default="", metavar="<string>", help="The rule's ID.")
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Must specify the -id parameter")
    call(client_from_args(args), "DELETE", f"/v1/acl/binding-rule/{args.id}", None,
         f"Error deleting binding rule {args.id!r}")
    out(f'Binding rule "{args.id}" deleted successfully')
    return 0


policy_list = lister("policy", "/v1/acl/policies", "policy", "Name",
                     lambda x, meta: fmt.policy(x, meta, listing=True))
role_list = lister("role", "/v1/acl/roles", "role", "Name", fmt.role)
method_list = lister("auth-method", "/v1/acl/auth-methods", "auth method", "Name", fmt.auth_method)
rule_list = lister("binding-rule", "/v1/acl/binding-rules", "binding rule", "ID", fmt.binding_rule, query="method")
