"""``cairn connect proxy``: the built-in mTLS proxy (appliance/connect/proxy/).

Configuration comes from the agent (``-sidecar-for <service id>`` finds the connect-proxy
registered as that service's sidecar, ``-proxy-id`` names one) or from flags (``-service`` with
``-upstream name:port`` and optionally ``-listen host:port -service-addr host:port``), as in
Consul's ``connect proxy`` (reference/connect.md §6.1). The proxy runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from aiohttp import web

from appliance import logs
from appliance.cli.flags import CliParser, UsageError, command, out
from appliance.cli.http_client import add_http_flags, config_from_args, tls_context
from appliance.connect.proxy.agent import AgentAPI, AgentError
from appliance.connect.proxy.config import (
    ProxyConfig,
    ProxyConfigError,
    find_sidecar,
    from_registration,
    parse_upstream_flag,
    split_host_port,
)
from appliance.connect.proxy.metrics import Metrics
from appliance.connect.proxy.runner import Proxy

USAGE = "cairn connect proxy [options]"
DESCRIPTION = """\
  Runs the built-in Connect proxy: a public listener that takes mutual TLS from
  other proxies (checked against the CA roots and the intentions) and hands the
  bytes to the local app, and a plain TCP listener per upstream that dials the
  upstream's proxies over mutual TLS.

    Sidecar of a registered service:  cairn connect proxy -sidecar-for web
    Ad-hoc, one upstream:             cairn connect proxy -service web -upstream db:9191
"""


def add_proxy_flags(p: CliParser) -> None:
    """-sidecar-for and -proxy-id (also `cairn connect envoy`'s)."""
    p.flag("sidecar-for", default=os.environ.get("CONNECT_SIDECAR_FOR", ""), metavar="<service id>",
           help="The ID of a local service whose registered sidecar proxy this is. Also CONNECT_SIDECAR_FOR.")
    p.flag("proxy-id", default=os.environ.get("CONNECT_PROXY_ID", ""), metavar="<id>",
           help="The ID of a connect-proxy (or gateway) service registered on the agent. Also CONNECT_PROXY_ID.")


def _parser() -> CliParser:
    p = CliParser("cairn connect proxy", USAGE, DESCRIPTION)
    add_proxy_flags(p)
    p.flag("service", default="", metavar="<name>",
           help="Name of the service this proxy represents (ad-hoc mode): its certificate's identity.")
    p.flag("upstream", action="append", default=[], metavar="<name:port>",
           help="An upstream as name:port or name:addr:port (prepared_query:name:port for a query); repeatable.")
    p.flag("listen", default="", metavar="<addr:port>",
           help="Address of the public mTLS listener in ad-hoc mode; needs -service-addr.")
    p.flag("service-addr", default="", metavar="<addr:port>",
           help="Address of the local app the public listener forwards to.")
    p.flag("register", action="store_true", help="Register the ad-hoc proxy with the agent (-service and -listen).")
    p.flag("register-id", default="", metavar="<id>", help="ID for -register. Default: <service>-proxy.")
    p.flag("metrics-addr", default="", metavar="<addr:port>",
           help="Serve the proxy's consul_proxy_* metrics in Prometheus' format at http://<addr:port>/metrics. "
                "Default: the registration's Proxy.Config.envoy_prometheus_bind_addr, if any.")
    p.flag("log-level", default="INFO", metavar="<level>", help="trace, debug, info, warn or err. Default INFO.")
    p.flag("log-json", action="store_true", help="Log JSON lines.")
    add_http_flags(p, server=False)
    return p


def _flags_config(args: argparse.Namespace) -> ProxyConfig:
    service = args.service
    public = local = None
    if args.listen:
        if not args.service_addr:
            raise UsageError("-service-addr must be specified with -listen so the proxy knows the backend "
                             "service address.")
        public = split_host_port(args.listen, "-listen")
        local = split_host_port(args.service_addr, "-service-addr")
    upstreams = tuple(parse_upstream_flag(u) for u in args.upstream)
    return ProxyConfig(service=service, public=public, local_app=local, upstreams=upstreams)


async def _configure(api: AgentAPI, args: argparse.Namespace) -> ProxyConfig:
    proxy_id = args.proxy_id
    if args.sidecar_for and not proxy_id:
        proxy_id = find_sidecar(await api.get("/v1/agent/services") or {}, args.sidecar_for)
    if proxy_id:
        return from_registration(await api.get(f"/v1/agent/service/{proxy_id}"))
    return _flags_config(args)


def _banner(args: argparse.Namespace, cfg: ProxyConfig) -> None:
    out("==> Cairn Connect proxy starting...")
    if cfg.proxy_id:
        out("    Configuration mode: Agent API")
        if args.sidecar_for:
            out(f"        Sidecar for ID: {args.sidecar_for}")
        out(f"              Proxy ID: {cfg.proxy_id}")
    else:
        out("    Configuration mode: Flags")
        out(f"               Service: {cfg.service}")
        for up in cfg.upstreams:
            out(f"              Upstream: {up.name} => {up.bind_address}:{up.bind_port}")
        listener = f"{cfg.public[0]}:{cfg.public[1]} => {cfg.local_app[0]}:{cfg.local_app[1]}" \
            if cfg.public and cfg.local_app else "Disabled"
        out(f"       Public listener: {listener}")
    out("")
    out("==> Log data will now stream in as it occurs:")
    out("")
    sys.stdout.flush()


async def _serve_metrics(metrics: Metrics, addr: str) -> web.AppRunner:
    host, port = split_host_port(addr, "-metrics-addr")

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", port).start()
    return runner


async def _main(args: argparse.Namespace) -> int:
    http = config_from_args(args)
    tls = tls_context(http) if http.base_url.startswith("https://") else None
    async with AgentAPI(http.base_url, http.token, tls) as api:
        try:
            cfg = await _configure(api, args)
        except AgentError as exc:
            if not exc.status:
                raise UsageError(f"Error connecting to Consul agent: {exc}") from None
            raise UsageError(f"Failed to read the proxy's registration: {exc}") from None
        _banner(args, cfg)
        metrics = Metrics()
        metrics_addr = args.metrics_addr or cfg.metrics_addr  # the flag, else the registration's config
        runner = await _serve_metrics(metrics, metrics_addr) if metrics_addr else None
        registered = ""
        if args.register and cfg.public is not None:
            registered = args.register_id or f"{cfg.service}-proxy"
            await api.request("PUT", "/v1/agent/service/register", body={
                "Kind": "connect-proxy", "ID": registered, "Name": f"{cfg.service}-proxy", "Port": cfg.public[1],
                "Address": cfg.public[0], "Proxy": {"DestinationServiceName": cfg.service,
                                                    "LocalServiceAddress": cfg.local_app[0] if cfg.local_app else "",
                                                    "LocalServicePort": cfg.local_app[1] if cfg.local_app else 0}})
        proxy = Proxy(api, cfg, metrics=metrics)
        task = asyncio.ensure_future(proxy.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            if registered:
                with contextlib.suppress(AgentError):
                    await api.request("PUT", f"/v1/agent/service/deregister/{registered}")
            if runner is not None:
                await runner.cleanup()
    out("==> Cairn Connect proxy shutdown")
    return 0


@command
def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not args.service and not args.proxy_id and not args.sidecar_for:
        raise UsageError("-service or -proxy-id must be specified so that proxy can configure itself.")
    if args.register and not (args.service and args.listen):
        raise UsageError("-register may only be specified with -service and -listen")
    try:
        logs.setup(args.log_level, args.log_json)
    except logs.UnknownLevel as exc:
        raise UsageError(str(exc)) from None
    try:
        return asyncio.run(_main(args))
    except ProxyConfigError as exc:
        raise UsageError(str(exc)) from None
