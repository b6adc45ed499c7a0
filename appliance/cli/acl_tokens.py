"""``cairn acl bootstrap``, ``set-agent-token`` and ``token create|read|list|update|clone|delete``."""

from __future__ import annotations

from appliance.cli import acl_format as fmt
from appliance.cli.acl_common import call, link_flags, linked, parser, read_value, show
from appliance.cli.flags import CliError, UsageError, out
from appliance.cli.http_client import HTTPClient, client_from_args

AGENT_TOKEN_TYPES = {"default": "default", "agent": "agent", "recovery": "agent_recovery",
                     "agent_recovery": "agent_recovery", "replication": "replication",
                     "config_file_service_registration": "config_file_service_registration", "dns": "dns"}


# ------------------------------------------------------------------------------ bootstrap, agent tokens


def bootstrap(argv: list[str]) -> int:
    p = parser("bootstrap", "bootstrap [options] [SECRET]",
               "Bootstraps the ACL system: creates the initial management token. The optional\n"
               "argument is the secret to use: a value, @FILE or - for stdin.")
    args = p.parse(argv)
    body = None
    if args.args:
        body = {"BootstrapSecret": read_value(args.args[0]).strip()}
    tok = call(client_from_args(args), "PUT", "/v1/acl/bootstrap", body if body else {}, "Failed ACL bootstrapping")
    tok.pop("ID", None)
    show(args, tok, fmt.token(tok, args.meta))
    return 0


def set_agent_token(argv: list[str]) -> int:
    p = parser("set-agent-token", "set-agent-token [options] TYPE TOKEN",
               "Sets one of the agent's ACL tokens: default, agent, recovery, replication,\n"
               "config_file_service_registration or dns. If token persistence is not enabled, then\n"
               "tokens uploaded this way are not persisted and if the agent reloads then the tokens\n"
               "will need to be set again.", show=False)
    args = p.parse(argv)
    if not args.args:
        raise UsageError("Missing TYPE and TOKEN arguments")
    if len(args.args) == 1:
        raise UsageError("Missing TOKEN argument")
    if len(args.args) > 2:
        raise UsageError(f"Too many arguments: expected 2 got {len(args.args)}")
    kind = AGENT_TOKEN_TYPES.get(args.args[0])
    if kind is None:
        raise UsageError("Unknown token type")
    call(client_from_args(args), "PUT", f"/v1/agent/token/{kind}", {"Token": args.args[1]},
         f'Failed to set ACL token "{args.args[0]}"')
    out(f'ACL token "{args.args[0]}" set successfully')
    return 0


# ------------------------------------------------------------------------------ tokens


def token_create(argv: list[str]) -> int:
    p = parser("token create", "token create [options]", "Creates a token.")
    p.flag("accessor", default="", metavar="<string>", help="The token's AccessorID (a UUID); generated if empty.")
    p.flag("secret", default="", metavar="<string>", help="The token's SecretID (a UUID); generated if empty.")
    p.flag("description", default="", metavar="<string>", help="A description of the token.")
    p.flag("local", action="store_true", help="Create a token local to this datacenter.")
    p.flag("expires-ttl", default="", metavar="<duration>", help="How long the token lives.")
    link_flags(p)
    args = p.parse(argv)
    client = client_from_args(args)
    body = linked(client, args)
    if not any(body.get(k) for k in ("Policies", "Roles", "ServiceIdentities", "NodeIdentities",
                                     "TemplatedPolicies")):
        raise CliError("Cannot create a token without specifying -policy-name, -policy-id, -role-name, -role-id, "
                       "-service-identity, -node-identity, or -templated-policy at least once")
    body.update({"Description": args.description, "Local": args.local})
    if args.accessor:
        body["AccessorID"] = args.accessor
    if args.secret:
        body["SecretID"] = args.secret
    if args.expires_ttl:
        body["ExpirationTTL"] = args.expires_ttl
    tok = call(client, "PUT", "/v1/acl/token", body, "Failed to create new token")
    show(args, tok, fmt.token(tok, args.meta))
    return 0


def _token_id(client: HTTPClient, partial: str) -> str:
    if len(partial) == 36 or partial == "anonymous":
        return "00000000-0000-0000-0000-000000000002" if partial == "anonymous" else partial
    found = [t["AccessorID"] for t in call(client, "GET", "/v1/acl/tokens") or []
             if t["AccessorID"].startswith(partial)]
    if len(found) != 1:
        what = "No such token ID with prefix" if not found else "Ambiguous token ID prefix"
        raise CliError(f"Error determining token ID: {what}: {partial}")
    return found[0]


def token_read(argv: list[str]) -> int:
    p = parser("token read", "token read [options] -id TOKENID", "Reads a token.")
    p.flag("id", default="", metavar="<string>", help="AccessorID (or unique prefix) of the token.")
    p.flag("self", action="store_true", help="Read the token the request is made with.")
    p.flag("expanded", action="store_true", help="Show the policies and roles the token resolves to.")
    args = p.parse(argv)
    client = client_from_args(args)
    if args.self:
        tok = call(client, "GET", "/v1/acl/token/self", None, "Error reading token")
    else:
        if not args.id:
            raise UsageError("Must specify the -id parameter")
        path = f"/v1/acl/token/{_token_id(client, args.id)}" + ("?expanded" if args.expanded else "")
        tok = call(client, "GET", path, None, f'Error reading token "{args.id}"')
    show(args, tok, fmt.token(tok, args.meta))
    return 0


def token_list(argv: list[str]) -> int:
    p = parser("token list", "token list [options]", "Lists tokens.")
    args = p.parse(argv)
    tokens = call(client_from_args(args), "GET", "/v1/acl/tokens", None, "Failed to retrieve the token list")
    show(args, tokens, "\n\n".join(fmt.token(t, args.meta, listing=True) for t in tokens or []))
    return 0


def token_update(argv: list[str]) -> int:
    p = parser("token update", "token update [options] -id TOKENID", "Updates a token.")
    p.flag("id", default="", metavar="<string>", help="AccessorID (or unique prefix) of the token.")
    p.flag("description", default=None, metavar="<string>", help="A new description.")
    p.flag("merge-policies", action="store_true", help="Keep the token's policies and add these.")
    p.flag("merge-roles", action="store_true", help="Keep the token's roles and add these.")
    p.flag("merge-service-identities", action="store_true", help="Keep the service identities and add these.")
    p.flag("merge-node-identities", action="store_true", help="Keep the node identities and add these.")
    link_flags(p)
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Cannot update a token without specifying the -id parameter")
    client = client_from_args(args)
    accessor = _token_id(client, args.id)
    tok = call(client, "GET", f"/v1/acl/token/{accessor}", None, "Error when retrieving current token")
    new = linked(client, args)
    for key, merge in (("Policies", args.merge_policies), ("Roles", args.merge_roles),
                       ("ServiceIdentities", args.merge_service_identities),
                       ("NodeIdentities", args.merge_node_identities)):
        if merge:
            new[key] = (tok.get(key) or []) + (new.get(key) or [])
    body = {**{k: tok[k] for k in ("AccessorID", "SecretID", "Local", "Description") if k in tok}, **new}
    if args.description is not None:
        body["Description"] = args.description
    tok = call(client, "PUT", f"/v1/acl/token/{accessor}", body, f'Failed to update token "{accessor}"')
    out("Token updated successfully.")
    show(args, tok, fmt.token(tok, args.meta))
    return 0


def token_clone(argv: list[str]) -> int:
    p = parser("token clone", "token clone [options] -id TOKENID", "Clones a token with new IDs.")
    p.flag("id", default="", metavar="<string>", help="AccessorID (or unique prefix) of the token.")
    p.flag("description", default="", metavar="<string>", help="Description of the clone.")
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Cannot clone a token without specifying the -id parameter")
    client = client_from_args(args)
    accessor = _token_id(client, args.id)
    tok = call(client, "PUT", f"/v1/acl/token/{accessor}/clone", {"Description": args.description},
               "Failed to clone token")
    out("Token cloned successfully.")
    show(args, tok, fmt.token(tok, args.meta))
    return 0


def token_delete(argv: list[str]) -> int:
    p = parser("token delete", "token delete [options] -id TOKENID", "Deletes a token.", show=False)
    p.flag("id", default="", metavar="<string>", help="AccessorID (or unique prefix) of the token.")
    args = p.parse(argv)
    if not args.id:
        raise UsageError("Must specify the -id parameter")
    client = client_from_args(args)
    accessor = _token_id(client, args.id)
    call(client, "DELETE", f"/v1/acl/token/{accessor}", None, f"Error deleting token {accessor!r}")
    out(f"Token \"{accessor}\" deleted successfully")
    return 0
