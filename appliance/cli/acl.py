"""``cairn acl ...``: Consul's ACL commands over the HTTP API.

    bootstrap [SECRET|@FILE|-]          PUT /v1/acl/bootstrap
    token create|read|list|update|delete|clone
    policy create|read|list|update|delete
    role create|read|list|update|delete
    auth-method create|read|list|delete
    binding-rule create|read|list|delete
    set-agent-token TYPE TOKEN          PUT /v1/agent/token/<type>

Every command takes the HTTP flags (``-token``, ``-token-file``, ``CONSUL_HTTP_TOKEN``,
``CONSUL_HTTP_TOKEN_FILE`` ...); the ones that show objects take ``-format=pretty|json`` and
``-meta``. A policy or role given with ``-id`` (or ``-policy-id``/``-role-id``) may be a unique
prefix of the ID, as in Consul. The pretty output is Consul's (appliance/cli/acl_format.py).
"""

from __future__ import annotations

from appliance.cli import acl_objects as obj, acl_tokens as tok
from appliance.cli.flags import command, run_subcommand

HELP = """\
Usage: cairn acl <subcommand> [options] [args]

  Manages the ACL system: bootstrap it, and create and manage tokens, policies, roles, auth
  methods and binding rules, and the agent's own tokens.

      Bootstrap ACLs:       $ cairn acl bootstrap
      Create a policy:      $ cairn acl policy create -name "kv-read" -rules @rules.hcl
      Create a token:       $ cairn acl token create -description "app" -policy-name kv-read
      Set an agent token:   $ cairn acl set-agent-token agent "<token>"

Subcommands:
    auth-method        Manage auth methods
    binding-rule       Manage binding rules
    bootstrap          Bootstrap the ACL system
    policy             Manage policies
    role               Manage roles
    set-agent-token    Assign tokens for the agent's use
    token              Manage tokens
"""




GROUPS = {
    "token": {"create": tok.token_create, "read": tok.token_read, "list": tok.token_list,
              "update": tok.token_update, "clone": tok.token_clone, "delete": tok.token_delete},
    "policy": {"create": obj.policy_create, "read": obj.policy_read, "list": obj.policy_list,
               "update": obj.policy_update, "delete": obj.policy_delete},
    "role": {"create": obj.role_create, "read": obj.role_read, "list": obj.role_list, "update": obj.role_update,
             "delete": obj.role_delete},
    "auth-method": {"create": obj.method_create, "read": obj.method_read, "list": obj.method_list,
                    "delete": obj.method_delete},
    "binding-rule": {"create": obj.rule_create, "read": obj.rule_read, "list": obj.rule_list,
                     "delete": obj.rule_delete},
}


def _group(name: str) -> object:
    subs = GROUPS[name]
    text = (f"Usage: cairn acl {name} <subcommand> [options] [args]\n\nSubcommands:\n"
            + "".join(f"    {sub}\n" for sub in sorted(subs)))
    return lambda argv: run_subcommand(f"acl {name}", argv, text, subs)


@command
def run(argv: list[str]) -> int:
    subs = {name: _group(name) for name in GROUPS}
    subs.update({"bootstrap": tok.bootstrap, "set-agent-token": tok.set_agent_token})
    return run_subcommand("acl", argv, HELP, subs)  # type: ignore[arg-type]
