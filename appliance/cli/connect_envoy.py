"""``cairn connect envoy``: Envoy's bootstrap for a sidecar or gateway (appliance/connect/proxy/envoy.py).

``-bootstrap`` prints the JSON and exits; without it the command runs ``envoy`` from the PATH with
that configuration, as Consul's does. The proxy is found as ``cairn connect proxy`` finds it
(``-sidecar-for``, ``-proxy-id``), or is a gateway (``-gateway mesh|terminating|ingress``,
``-service`` its name, ``-register`` to register it with ``-address``). cairn's agents serve no
xDS, so Envoy started this way waits for a control plane on ``-grpc-addr`` (docs/connect.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from appliance.cli.connect_proxy import add_proxy_flags
from appliance.cli.flags import ApiError, CliError, CliParser, ConnectError, UsageError, command, out
from appliance.cli.http_client import HTTPClient, add_http_flags, client_from_args, config_from_args, quote_path
from appliance.connect.proxy.config import ProxyConfigError, find_sidecar, split_host_port
from appliance.connect.proxy.envoy import DEFAULT_ADMIN_BIND, DEFAULT_GRPC_ADDR, bootstrap, cluster_of

USAGE = "cairn connect envoy [options] [-- passthrough args]"
DESCRIPTION = """\
  Prints (-bootstrap) or runs Envoy with the bootstrap configuration for a
  Connect sidecar or gateway: its node ID is the proxy's service ID and it asks
  the agent's gRPC address for its configuration over xDS.

    cairn connect envoy -sidecar-for web -bootstrap
    cairn connect envoy -gateway mesh -register -address 10.0.0.5:8443 -bootstrap
"""
GATEWAYS = {"mesh": "mesh-gateway", "terminating": "terminating-gateway", "ingress": "ingress-gateway"}


def _parser() -> CliParser:
    p = CliParser("cairn connect envoy", USAGE, DESCRIPTION)
    add_proxy_flags(p)
    p.flag("gateway", default="", metavar="<kind>", help="Run a gateway: mesh, terminating or ingress.")
    p.flag("service", default="", metavar="<name>", help="The gateway's service name. Default: <kind>-gateway.")
    p.flag("register", action="store_true", help="Register the gateway with the agent (needs -gateway).")
    p.flag("address", default="", metavar="<addr:port>", help="The gateway's LAN address, for -register.")
    p.flag("wan-address", default="", metavar="<addr:port>", help="A mesh gateway's WAN address, for -register.")
    p.flag("admin-bind", default=DEFAULT_ADMIN_BIND, metavar="<addr:port>",
           help=f"Envoy's admin listener. Default {DEFAULT_ADMIN_BIND}.")
    p.flag("admin-access-log-path", default="/dev/null", metavar="<path>",
           help="Envoy's admin access log. Default /dev/null.")
    p.flag("grpc-addr", default="", metavar="<addr>",
           help="The agent's gRPC address (host:port, http(s)://host:port or unix://path). Also "
                f"CAIRN_GRPC_ADDR or CONSUL_GRPC_ADDR. Default {DEFAULT_GRPC_ADDR}.")
    p.flag("bootstrap", action="store_true", help="Print the bootstrap JSON and exit instead of running Envoy.")
    p.flag("envoy-version", default="", metavar="<version>", help="Accepted; the v3 API is used for every version.")
    p.flag("envoy-binary", default="", metavar="<path>", help="Envoy to run. Default: envoy from the PATH.")
    add_http_flags(p, server=False)
    return p


def _proxy(args: argparse.Namespace) -> tuple[str, str]:
    """(proxy ID, node cluster) of the proxy or gateway to bootstrap."""
    client = client_from_args(args)
    if args.gateway:
        kind = GATEWAYS.get(args.gateway)
        if kind is None:
            raise UsageError(f'Invalid gateway kind "{args.gateway}": must be one of mesh, terminating or ingress')
        service = args.service or kind
        proxy_id = args.proxy_id or service
        if args.register:
            _register(args, client, kind, service, proxy_id)
        return proxy_id, service
    if args.register:
        raise UsageError("Auto-Registration can only be used for gateways")
    proxy_id = args.proxy_id
    if not proxy_id and args.sidecar_for:
        try:
            proxy_id = find_sidecar(client.get_json("/v1/agent/services") or {}, args.sidecar_for)
        except ProxyConfigError as exc:
            raise CliError(str(exc)) from None
    if not proxy_id:
        raise UsageError("No proxy ID specified. One of -proxy-id, -sidecar-for, or -gateway is required")
    svc = client.get_json(f"/v1/agent/service/{quote_path(proxy_id)}")
    return proxy_id, cluster_of(svc or {})


def _register(args: argparse.Namespace, client: HTTPClient, kind: str, service: str, proxy_id: str) -> None:
    if not args.address:
        raise UsageError("-address is required with -register (the gateway's address and port)")
    host, port = split_host_port(args.address, "-address")
    body: dict[str, object] = {"Kind": kind, "ID": proxy_id, "Name": service, "Address": host, "Port": port}
    if args.wan_address:
        wan_host, wan_port = split_host_port(args.wan_address, "-wan-address")
        body["TaggedAddresses"] = {"lan": {"Address": host, "Port": port},
                                   "wan": {"Address": wan_host, "Port": wan_port}}
    client.put("/v1/agent/service/register", body=json.dumps(body).encode())


def _node_name(args: argparse.Namespace) -> str:
    """The agent's node name (optional metadata: "" when the agent does not say)."""
    try:
        self_info = client_from_args(args).get_json("/v1/agent/self") or {}
    except (ApiError, ConnectError):
        return ""
    return str((self_info.get("Config") or {}).get("NodeName", ""))


@command
def run(argv: list[str]) -> int:
    argv, passthrough = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = _parser().parse_args(argv)
    http = config_from_args(args)
    proxy_id, cluster = _proxy(args)
    node_name = _node_name(args)
    grpc = args.grpc_addr or os.environ.get("CAIRN_GRPC_ADDR") or os.environ.get("CONSUL_GRPC_ADDR") \
        or DEFAULT_GRPC_ADDR
    ca_pem = ""
    if http.ca_file:
        try:
            with open(http.ca_file, encoding="ascii") as f:
                ca_pem = f.read()
        except OSError as exc:
            raise CliError(f"Error loading CA file: {exc.strerror}") from None
    config = bootstrap(proxy_id=proxy_id, cluster=cluster, token=http.token, node_name=node_name,
                       admin_bind=args.admin_bind, access_log_path=args.admin_access_log_path, grpc_addr=grpc,
                       ca_pem=ca_pem)
    text = json.dumps(config, indent=2)
    if args.bootstrap:
        out(text)
        return 0
    binary = args.envoy_binary or shutil.which("envoy")
    if not binary:
        raise CliError('Couldn\'t find envoy binary: exec: "envoy": executable file not found in $PATH')
    sys.stdout.flush()
    os.execv(binary, [binary, "--config-yaml", text, "--disable-hot-restart", *passthrough])
    return 1  # not reached
