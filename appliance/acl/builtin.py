"""The ACL system's fixed objects and texts: built-in IDs and policies, identity templates,
templated policies, and Consul's permission-denied sentences.

Service and node identities and the templated policies (`builtin/service`, `builtin/node`,
`builtin/dns`, ...) expand to synthetic policies whose rules are the templates below with the
name filled in; their IDs are a stable hash of the rules (Consul's are never compared by clients).
"""

from __future__ import annotations

import hashlib

GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_READ_ONLY_ID = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_ID = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_SECRET = "anonymous"
RESERVED_PREFIX = "00000000-0000-0000-0000-0000000000"
ROOT_NAMES = frozenset({"allow", "deny", "manage"})


def _all(level: str) -> str:
    blocks = [f'acl = "{level}"']
    for name in ("agent", "event", "key"):
        blocks.append(f'{name}_prefix "" {{\n\tpolicy = "{level}"\n}}')
    blocks.append(f'keyring = "{level}"')
    blocks.append(f'node_prefix "" {{\n\tpolicy = "{level}"\n}}')
    blocks += [f'operator = "{level}"', f'mesh = "{level}"', f'peering = "{level}"']
    blocks.append(f'query_prefix "" {{\n\tpolicy = "{level}"\n}}')
    blocks.append(f'service_prefix "" {{\n\tpolicy = "{level}"\n\tintentions = "{level}"\n}}')
    blocks.append(f'session_prefix "" {{\n\tpolicy = "{level}"\n}}')
    return "\n" + "\n".join(blocks) + "\n"


GLOBAL_MANAGEMENT_RULES = _all("write")
GLOBAL_READ_ONLY_RULES = _all("read")
BUILTIN_POLICIES = (
    (GLOBAL_MANAGEMENT_ID, "global-management", "Builtin Policy that grants unlimited access",
     GLOBAL_MANAGEMENT_RULES),
    (GLOBAL_READ_ONLY_ID, "builtin/global-read-only",
     "Builtin Policy that grants unlimited read-only access to all components", GLOBAL_READ_ONLY_RULES),
)

SERVICE_IDENTITY = """
service "{name}" {{
\tpolicy = "write"
}}
service "{name}-sidecar-proxy" {{
\tpolicy = "write"
}}
service_prefix "" {{
\tpolicy = "read"
}}
node_prefix "" {{
\tpolicy = "read"
}}"""
NODE_IDENTITY = """
node "{name}" {{
\tpolicy = "write"
}}
service_prefix "" {{
\tpolicy = "read"
}}"""
DNS_RULES = """
node_prefix "" {
\tpolicy = "read"
}
service_prefix "" {
\tpolicy = "read"
}
query_prefix "" {
\tpolicy = "read"
}"""
_NAME_SCHEMA = ('{\n  "type": "object",\n  "properties": {\n    "name": { "type": "string", "$ref": "#/definitions/'
                'min-length-one" }\n  },\n  "required": ["name"],\n  "definitions": {\n    "min-length-one": {\n'
                '      "type": "string",\n      "minLength": 1\n    }\n  }\n}')
# name -> (description, rules template or fixed rules, whether it takes a Name variable)
TEMPLATES: dict[str, tuple[str, str, bool]] = {
    "builtin/service": ("Gives the token or role permissions to register a service and discover services in the "
                        "Consul catalog. It also gives the specified service's sidecar proxy the permission to "
                        "discover and route traffic to other services.", SERVICE_IDENTITY, True),
    "builtin/node": ("Gives the token or role permissions for a register an agent/node into the catalog. A node "
                     "is typically a consul agent but can also be a physical server, cloud instance or a "
                     "container.", NODE_IDENTITY, True),
    "builtin/dns": ("Gives the token or role permissions for the Consul DNS to query services in the network.",
                    DNS_RULES, False),
    "builtin/nomad-server": ("Gives the token or role permissions required for integration with a nomad server.",
                             '\nacl = "write"\nagent_prefix "" {\n\tpolicy = "read"\n}\nnode_prefix "" {\n'
                             '\tpolicy = "read"\n}\nservice_prefix "" {\n\tpolicy = "write"\n}', False),
    "builtin/nomad-client": ("Gives the token or role permissions required for integration with a nomad client.",
                             '\nagent_prefix "" {\n\tpolicy = "read"\n}\nnode_prefix "" {\n\tpolicy = "read"\n}\n'
                             'service_prefix "" {\n\tpolicy = "write"\n}', False),
    "builtin/api-gateway": ("Allows Consul API Gateway to reference and update its configuration.",
                            '\nmesh = "read"\nnode_prefix "" {\n\tpolicy = "read"\n}\nservice_prefix "" {\n'
                            '\tpolicy = "read"\n}\nservice "{name}" {{\n\tpolicy = "write"\n}}', True),
    "builtin/workload-identity": ("Allows workloads to request the identity.",
                                  '\nidentity "{name}" {{\n\tpolicy = "write"\n}}', True),
}


def render_template(name: str, variables: dict[str, str]) -> str:
    """A templated policy's rules with its variables filled in (KeyError if unknown)."""
    _, rules, named = TEMPLATES[name]
    if not named:
        return rules
    if name == "builtin/api-gateway":
        return rules.replace("{{", "\x00").replace("}}", "\x01").replace(
            "{name}", variables.get("Name", "")).replace("\x00", "{").replace("\x01", "}")
    return rules.format(name=variables.get("Name", ""))


def template_schema(name: str) -> str:
    return _NAME_SCHEMA if TEMPLATES[name][2] else ""


def synthetic_id(rules: str) -> str:
    return hashlib.blake2b(rules.encode(), digest_size=16).hexdigest()


def synthetic_policy(rules: str, description: str, datacenters: list[str] | None = None) -> dict[str, object]:
    """A synthetic policy as Consul shows it (`?expanded`, templated-policy preview)."""
    pid = synthetic_id(rules)
    out: dict[str, object] = {"ID": pid, "Name": f"synthetic-policy-{pid}", "Description": description,
                              "Rules": rules}
    if datacenters:
        out["Datacenters"] = list(datacenters)
    return out


def denied_text(accessor: str, permission: str, segment: str | None) -> str:
    """Consul's 403 body for a missing permission (`<resource>:<level>`, `segment` None for scalars)."""
    on = "" if segment is None else f' on "{_go_escape(segment)}"'
    if accessor == ANONYMOUS_ID:
        return (f"Permission denied: anonymous token lacks permission '{permission}'{on}. "
                "The anonymous token is used implicitly when a request does not specify a token.")
    return f"Permission denied: token with AccessorID '{accessor}' lacks permission '{permission}'{on}"


def _go_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
