"""A schemathesis check (loaded through SCHEMATHESIS_HOOKS by tests/hostile/test_schemathesis.py):
no 5xx but Consul's own 500 answers.

Consul answers an RPC error with 500 and the error's text, so a fuzzer's `?dc=<noise>` gets
"No path to datacenter", a catalog registration without a node "Must provide node", and so on;
those are the documented contract (docs/openapi.json lists 500 for every route), not faults. Any
other 5xx (an unhandled exception's answer, a 502/503 outside the agent health endpoints) fails.
"""

from __future__ import annotations

import re

import schemathesis

# Consul's 500 texts for what a fuzzer can send: unknown datacenters, invalid registrations,
# prepared queries, coordinates, keyring and member operations, ACL objects that fail on their input.
CONSUL_500 = re.compile(
    r"No path to datacenter"
    r"|Must provide (node|address|service|check)"
    r"|Cannot modify non-existent prepared query: .*"
    r"|Invalid prepared query: .*"
    r"|Prepared query lookup failed: .*"
    r"|invalid coordinate"
    r"|agent: No node found with name .*"
    r"|\d+ errors? occurred:.*"  # keyring operations, each datacenter's error listed
    r"|rpc error making call: .*"
    # the ACL endpoints' validation (reference security.md §3.1-§3.2): RPC errors, so 500s
    r"|Invalid (Policy|Role|Token|Auth Method|Binding Rule): .*"
    r"|(Policy|Role) ID invalid UUID|UUID must be 36 characters"
    r"|Accessor ID is missing or an invalid UUID|AccessorID is not a valid UUID"
    r"|[Cc]annot find (policy|role|binding rule|auth method|token) .*"
    # Connect (reference connect.md): the CA configuration, config entries and intentions
    r"|error configuring provider: .*|could not initialize provider: .*|could not atomically update roots and config"
    r"|invalid config entry kind: .*|Name is required|service-defaults name must be .*"
    r"|invalid name \(\".*\"\), only \".*\" is supported|UpstreamConfig and Destination are mutually exclusive.*"
    r"|Invalid MutualTLSMode .*|Route\[\d+\] .*|no splits configured|split weights must be .*"
    r"|split destination occurs more than once: .*|the sum of all split weights must be 100, not .*"
    r"|DefaultSubset \".*\" is not a valid subset|Redirect and Failover cannot both be set|Bad Failover\[.*"
    r"|discovery chain \".*\" uses a protocol .*|detected circular .*|Sources\[\d+\].*"
    r"|At least one source is required|Name: wildcard character .*"
    r"|required query parameter '.*' not set|'by' parameter must be one of 'source' or 'destination'"
    r"|(SourceName|DestinationName)(: wildcard character .*| must be set)"
    r"|Action must be (set to 'allow' or 'deny'|empty if Permissions are set)|SourceType must be set to 'consul'"
    r"|(Meta|Description) exceeds maximum .*|ID must be empty when creating a new intention"
    r"|duplicate intention found: .*|Cannot modify non-existent intention: .*|unsupported SourceType: .*"
    r"|port \d+ declared on two listeners|protocol must be 'tcp', .*|No service declared for listener .*"
    r"|Multiple services per listener .*|Wildcard service name is only valid .*|Associating hosts to a service .*"
    r"|Service name cannot be blank .*",
    re.DOTALL,
)
# The agent health endpoints answer 503 when a check is critical or in maintenance (Consul's rule).
HEALTH_503 = "/v1/agent/health/service/"


@schemathesis.check
def only_consul_server_errors(ctx, response, case):
    status = response.status_code
    if status < 500 or (status == 503 and case.path.startswith(HEALTH_503)):
        return
    text = response.text.strip()
    if status != 500 or not CONSUL_500.fullmatch(text):
        raise AssertionError(f"{status} outside Consul's 500 answers: {text[:300]!r}")
